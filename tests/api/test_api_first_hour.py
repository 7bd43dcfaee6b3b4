"""The first hour over real HTTP (issue #12): JSON sent as form data, hints that say what to do,
fans and file names in headers, an offline /docs, a described stats schema, readable logs."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from initserve.api.access_log import ReadableFormatter, log_config
from initserve.api.names import ascii_filename, content_disposition
from initserve.engine.errors import human_bytes

from tests.live_server import LiveServer

BODY = b'{"shape":[4],"scheme":"zeros"}'


def test_curl_d_without_a_content_type_is_read_as_json(live: LiveServer) -> None:
    # What `curl -d '{...}' URL` sends, run through curl itself when it is installed.
    url = f"{live.url}/v1/init?format=stats"
    try:
        out = subprocess.run(["curl", "-s", "-d", BODY.decode(), url], capture_output=True, timeout=30, check=True)
    except FileNotFoundError:
        pytest.skip("curl is not installed")
    assert json.loads(out.stdout)["numel"] == 4


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"]
)
def test_json_sent_as_form_data_or_without_type_is_accepted(http: httpx.Client, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = http.post("/v1/init?format=stats", content=BODY, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["numel"] == 4


def test_real_form_data_says_the_api_takes_json(http: httpx.Client) -> None:
    response = http.post(
        "/v1/init", content=b"shape=4&scheme=zeros", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400
    assert "application/x-www-form-urlencoded; this API takes a JSON body" in response.json()["detail"]


def test_other_media_types_get_415_naming_the_fix(http: httpx.Client) -> None:
    response = http.post("/v1/init", content=BODY, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    problem = response.json()
    assert problem["type"].endswith("unsupported-media-type")
    assert "Content-Type: application/json" in problem["detail"] and "text/plain" in problem["detail"]
    assert "b'" not in problem["detail"]  # no raw bytes echoed back


@pytest.mark.parametrize(("key", "value"), [("std", 0.02), ("gain", 2.0), ("mode", "fan_out"), ("sparsity", 0.5)])
def test_top_level_scheme_params_are_pointed_under_params(http: httpx.Client, key: str, value: Any) -> None:
    response = http.post("/v1/init", json={"shape": [4, 4], "scheme": "normal", key: value})
    assert response.status_code == 422
    assert f'scheme parameters go under `params`, e.g. {{"params": {{"{key}":' in response.json()["detail"]


def test_unknown_top_level_keys_that_are_no_param_get_no_params_hint(http: httpx.Client) -> None:
    response = http.post("/v1/init", json={"shape": [4, 4], "scheme": "normal", "colour": 1})
    assert "params" not in response.json()["detail"]


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [("kaiming_unifrom", "did you mean 'kaiming_uniform'"), ("RandomNormal", "params {std: 0.05}")],
)
def test_scheme_typos_over_http(http: httpx.Client, scheme: str, expected: str) -> None:
    response = http.post("/v1/init", json={"shape": [4, 4], "scheme": scheme})
    assert response.status_code == 422 and expected in response.json()["detail"]


def test_alias_over_http_has_the_catalog_names_etag(http: httpx.Client) -> None:
    a = http.post("/v1/init", json={"shape": [8, 8], "scheme": "kaiming_uniform_", "seed": 1})
    b = http.post("/v1/init", json={"shape": [8, 8], "scheme": "kaiming_uniform", "seed": 1})
    assert a.status_code == b.status_code == 200
    assert a.headers["etag"] == b.headers["etag"] and a.content == b.content
    page = http.get("/v1/schemes/HeNormal")
    assert page.status_code == 200 and page.json()["name"] == "he_normal" and "HeNormal" in page.json()["aliases"]
    missing = http.get("/v1/schemes/kaiming_unifrom")
    assert missing.status_code == 404 and "did you mean 'kaiming_uniform'" in missing.json()["detail"]


def test_keras_family_layout_refusal_and_fans_header(http: httpx.Client) -> None:
    refused = http.post("/v1/init", json={"shape": [784, 256], "scheme": "he_normal"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "layout"]
    for layout, fans in (
        ("keras", "fan_in=784; fan_out=256; layout=keras"),
        ("torch", "fan_in=256; fan_out=784; layout=torch"),
    ):
        spec = {"shape": [784, 256], "scheme": "he_normal", "layout": layout}
        file = http.post("/v1/init", json=spec)
        assert file.headers["x-initserve-fans"] == fans
        head = http.head(file.headers["content-location"])
        assert head.headers["x-initserve-fans"] == fans
        stats = http.post("/v1/init?format=stats", json=spec)
        assert stats.headers["x-initserve-fans"] == fans
        assert (
            f"fan_in={stats.json()['fan_in']}; fan_out={stats.json()['fan_out']}; layout={stats.json()['layout']}"
            == fans
        )
    assert "x-initserve-fans" not in http.post("/v1/init", json={"shape": [4], "scheme": "zeros"}).headers


@pytest.mark.parametrize("name", ["task a", "层/权重", 'a"b;c', ".hidden", "weight"])
def test_any_name_is_served_and_its_file_name_is_rfc8187_encoded(http: httpx.Client, name: str) -> None:
    response = http.post("/v1/init", json={"shape": [2, 3], "scheme": "normal", "name": name})
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition.isascii()
    assert disposition.startswith('attachment; filename="') and "; filename*=UTF-8''" in disposition
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert "/" not in fallback and not fallback.startswith(".") and fallback == ascii_filename(name + ".safetensors")
    header_len = int.from_bytes(response.content[:8], "little")
    assert name in json.loads(response.content[8 : 8 + header_len])  # the tensor keeps its exact name
    assert unquote(disposition.rsplit("''", 1)[1]) == name + ".safetensors"
    location = response.headers["content-location"]  # the name travels inside the token: URL-safe ASCII
    assert location.isascii() and " " not in location
    again = http.get(location)
    assert again.status_code == 200 and again.content == response.content


def test_content_disposition_of_a_plain_name() -> None:
    assert (
        content_disposition("w.safetensors") == "attachment; filename=\"w.safetensors\"; filename*=UTF-8''w.safetensors"
    )


def test_docs_work_offline_from_installed_assets(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/static/{asset}" in page.text
        served = http.get(f"/docs/static/{asset}")
        assert served.status_code == 200 and len(served.content) > 10_000
    redoc = http.get("/redoc")
    assert redoc.status_code == 200 and "https://" not in redoc.text


def test_openapi_describes_every_stats_field_with_exact_integer_bounds(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    stats = schema["components"]["schemas"]["Stats"]
    for field in (
        "numel",
        "shape",
        "dtype",
        "mean",
        "std",
        "min",
        "max",
        "zeros_fraction",
        "histogram",
        "fan_in",
        "fan_out",
        "layout",
        "gain",
        "expected",
        "sha256",
        "algorithm",
        "reproducibility",
        "spec",
    ):
        assert field in stats["properties"], field
    init_200 = schema["paths"]["/v1/init"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/Stats"} in init_200["oneOf"]
    assert {"$ref": "#/components/schemas/FileDigest"} in init_200["oneOf"]
    live_stats = http.post("/v1/init?format=stats", json={"shape": [4, 4], "scheme": "normal"}).json()
    assert set(live_stats) == set(stats["properties"])
    seed = schema["components"]["schemas"]["InitSpec"]["properties"]["seed"]
    assert seed["maximum"] == 2**64 - 1 and isinstance(seed["maximum"], int)
    text = json.dumps(schema)
    assert "e+18" not in text and "e+19" not in text


def test_413_messages_are_humanised(server_factory: Any) -> None:
    server = server_factory(max_bytes=str(1 << 20), max_body_bytes="2048")
    with server.client() as client:
        big = client.post("/v1/init", json={"shape": [1024, 1024], "scheme": "zeros"})
        assert big.status_code == 413
        assert "4 MiB (4,194,304 bytes), above the limit of 1 MiB (1,048,576 bytes)" in big.json()["detail"]
        body = client.post("/v1/init", content=b"{" + b" " * 4096 + b"}", headers={"Content-Type": "application/json"})
        assert body.status_code == 413 and "2 KiB (2,048 bytes)" in body.json()["detail"]


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 bytes"), (1023, "1,023 bytes"), (1536, "1.5 KiB (1,536 bytes)"), (3 << 30, "3 GiB (3,221,225,472 bytes)")],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


def test_log_lines_are_readable_text_for_a_terminal_and_json_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    record = logging.LogRecord("initserve.access", logging.INFO, __file__, 1, "request", None, None)
    record.__dict__.update({"method": "POST", "status": 200, "tensor": "task a", "color_message": "\x1b[1mx\x1b[0m"})
    line = ReadableFormatter().format(record)
    assert "initserve.access request method=POST status=200 tensor='task a'" in line
    assert "\x1b" not in line
    config = log_config("info", readable=False)
    assert config["handlers"]["stderr"]["formatter"] == "json"
    assert "color_message" in config["formatters"]["json"]["reserved_attrs"]
    assert log_config("info", readable=True)["handlers"]["stderr"]["formatter"] == "text"


def test_serve_picks_text_logs_only_for_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from initserve.api import cli

    assert cli._readable_logs("text") and not cli._readable_logs("json")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert cli._readable_logs("auto")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert not cli._readable_logs("auto")


def test_a_wrong_method_is_405_with_allow(http: httpx.Client) -> None:
    response = http.get("/v1/init")
    assert response.status_code == 405
    assert response.json()["type"].endswith("method-not-allowed") and response.headers["allow"] == "POST"


# Every path answered with GET answers HEAD too (RFC 9110 §9.1): the GET's status and headers, no body.
GET_PATHS = [
    "/healthz",
    "/readyz",
    "/v1/schemes",
    "/v1/schemes/normal",
    "/v1/schemes/no_such_scheme",  # 404 either way
    "/v1/checkpoints/" + "a" * 64,  # documented GET, HEAD; 404 when absent
    "/v1/checkpoints/abc",  # 422 either way
    "/ui",
    "/ui/assets/plotly.min.js",
    "/docs",
    "/openapi.json",
]


@pytest.mark.parametrize("path", GET_PATHS)
def test_head_answers_wherever_get_does(http: httpx.Client, path: str) -> None:
    got = http.get(path)
    head = http.head(path)
    assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if "content-length" in got.headers and path not in ("/readyz",):  # readyz counts live generations
        assert head.headers["content-length"] == got.headers["content-length"]


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/tensors/t.abc", "GET, HEAD"),  # GET and HEAD are two routes here: Allow named only GET
        ("/v1/derived/abc", "GET, HEAD"),
        ("/v1/checkpoints/" + "a" * 64 + "/tensors/w", "GET, HEAD"),
        ("/v1/checkpoints/" + "a" * 64, "GET, HEAD"),
        ("/healthz", "GET, HEAD"),
        ("/v1/init", "POST"),
        ("/v1/checkpoints", "POST"),
    ],
)
def test_a_wrong_method_lists_every_allowed_method(http: httpx.Client, path: str, allow: str) -> None:
    response = http.request("DELETE", path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert allow in response.json()["detail"] and "DELETE" in response.json()["detail"]


def test_head_keeps_the_api_key_rule(server_factory: Callable[..., LiveServer]) -> None:
    keyed = server_factory(api_keys="head-key", protect_metrics="true")
    with keyed.client() as client:
        for path in ("/v1/schemes", "/v1/schemes/normal", "/metrics"):
            assert client.head(path).status_code == 401, path
            assert client.head(path, headers={"X-API-Key": "head-key"}).status_code == 200, path
