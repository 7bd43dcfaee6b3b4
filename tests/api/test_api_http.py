"""Acceptance tests of the HTTP contract against a real uvicorn process."""

from __future__ import annotations

import json
import random
import re

import httpx
import numpy as np
import pytest
from initserve.engine import ALGORITHM_VERSION
from safetensors.numpy import load as load_safetensors

from tests.live_server import LiveServer

LINEAR = {"shape": [64, 48], "scheme": "kaiming_uniform", "params": {"a": 5**0.5}, "seed": 42, "name": "fc.weight"}


def post_init(http: httpx.Client, spec: dict[str, object], **kwargs: object) -> httpx.Response:
    response = http.post("/v1/init", json=spec, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response


def test_same_body_gives_identical_bytes(http: httpx.Client) -> None:
    first, second = post_init(http, LINEAR), post_init(http, LINEAR)
    assert first.content == second.content
    assert first.headers["etag"] == second.headers["etag"]
    assert int(first.headers["content-length"]) == len(first.content)
    tensors = load_safetensors(first.content)
    assert list(tensors) == ["fc.weight"] and tensors["fc.weight"].shape == (64, 48)
    bound = (6 / ((1 + 5) * 48)) ** 0.5  # kaiming_uniform with a=√5 over fan_in 48
    assert np.abs(tensors["fc.weight"]).max() <= bound


def test_spelled_out_defaults_give_the_same_bytes_and_etag(http: httpx.Client) -> None:
    explicit = {**LINEAR, "dtype": "float32", "layout": "torch"}
    assert post_init(http, explicit).content == post_init(http, LINEAR).content


def test_generated_response_headers(http: httpx.Client) -> None:
    response = post_init(http, LINEAR)
    assert re.fullmatch(r'"[0-9a-f]{64}"', response.headers["etag"])
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-initserve-algorithm"] == str(ALGORITHM_VERSION)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-location"].startswith("/v1/tensors/t.")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_request_id_is_echoed(http: httpx.Client) -> None:
    response = http.get("/healthz", headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"


def test_tensor_url_bytes_equal_post_bytes_and_head_has_no_body(http: httpx.Client) -> None:
    posted = post_init(http, LINEAR)
    url = posted.headers["content-location"]
    got = http.get(url)
    assert got.status_code == 200 and got.content == posted.content
    assert got.headers["etag"] == posted.headers["etag"]
    head = http.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(posted.content))
    assert head.headers["etag"] == posted.headers["etag"]


def test_if_none_match_gives_304_without_body(http: httpx.Client) -> None:
    posted = post_init(http, LINEAR)
    url, etag = posted.headers["content-location"], posted.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = http.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert http.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200


def test_resolve_matches_what_is_served(http: httpx.Client) -> None:
    resolved = http.post("/v1/resolve", json=LINEAR).json()
    posted = post_init(http, LINEAR)
    assert resolved["url"] == posted.headers["content-location"]
    assert resolved["etag"] == posted.headers["etag"]
    assert resolved["content_length"] == len(posted.content)
    assert resolved["algorithm"] == ALGORITHM_VERSION
    assert resolved["canonical"]["name"] == "fc.weight" and resolved["canonical"]["dtype"] == "float32"


BUNDLE = {
    "seed": 7,
    "dtype": "float32",
    "tensors": {
        "conv.weight": {"shape": [8, 3, 3, 3], "scheme": "kaiming_normal", "params": {"nonlinearity": "relu"}},
        "conv.bias": {"shape": [8], "scheme": "zeros"},
        "fc.weight": {"shape": [10, 72], "scheme": "xavier_uniform", "dtype": "float16"},
        "embed": {"shape": [100, 16], "scheme": "normal", "params": {"std": 0.02}, "dtype": "float64"},
    },
}


def test_each_bundle_tensor_equals_its_init(http: httpx.Client) -> None:
    response = http.post("/v1/bundle", json=BUNDLE)
    assert response.status_code == 200, response.text
    tensors = load_safetensors(response.content)
    assert sorted(tensors) == sorted(BUNDLE["tensors"])  # type: ignore[arg-type]
    for name, spec in BUNDLE["tensors"].items():  # type: ignore[attr-defined]
        single = post_init(http, {**spec, "seed": BUNDLE["seed"], "name": name})
        alone = load_safetensors(single.content)[name]
        assert alone.dtype == tensors[name].dtype
        assert alone.tobytes() == tensors[name].tobytes(), name
    # and the bundle's own URL serves the same bytes
    assert http.get(response.headers["content-location"]).content == response.content


def test_seven_random_ranges_reassemble_the_body(http: httpx.Client) -> None:
    spec = {"shape": [300, 257], "scheme": "truncated_normal", "seed": 3, "dtype": "bfloat16"}
    full = post_init(http, spec).content
    url = post_init(http, spec).headers["content-location"]
    rng = random.Random(20240601)
    cuts = sorted(rng.sample(range(1, len(full)), 6))
    bounds = list(zip([0, *cuts], [*cuts, len(full)], strict=True))
    assert len(bounds) == 7
    rng.shuffle(bounds)
    pieces = {}
    for start, stop in bounds:
        response = http.get(url, headers={"Range": f"bytes={start}-{stop - 1}"})
        assert response.status_code == 206
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(full)}"
        assert len(response.content) == stop - start
        pieces[start] = response.content
    assert b"".join(pieces[k] for k in sorted(pieces)) == full


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers["Content-Range"], data.removesuffix(b"\r\n")))
    return parts


def test_multi_suffix_and_open_ranges(http: httpx.Client) -> None:
    posted = post_init(http, LINEAR)
    full, url = posted.content, posted.headers["content-location"]
    n = len(full)
    response = http.get(url, headers={"Range": "bytes=0-9, 100-199, -16"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(response.headers["content-length"]) == len(response.content)
    parts = parse_multipart(response.content, response.headers["content-type"])
    assert parts == [
        (f"bytes 0-9/{n}", full[:10]),
        (f"bytes 100-199/{n}", full[100:200]),
        (f"bytes {n - 16}-{n - 1}/{n}", full[-16:]),
    ]
    open_ended = http.get(url, headers={"Range": f"bytes={n - 100}-"})
    assert open_ended.status_code == 206 and open_ended.content == full[-100:]
    overlapping = http.get(url, headers={"Range": "bytes=0-99,50-149"})  # coalesced into one part
    assert overlapping.status_code == 206 and overlapping.content == full[:150]


def test_unsatisfiable_and_ignored_ranges(http: httpx.Client) -> None:
    posted = post_init(http, LINEAR)
    full, url, etag = posted.content, posted.headers["content-location"], posted.headers["etag"]
    n = len(full)
    bad = http.get(url, headers={"Range": f"bytes={n}-{n + 10}"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{n}"
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["type"] == "urn:initserve:problem:range-not-satisfiable"
    assert http.get(url, headers={"Range": "bytes=5-2"}).content == full  # malformed: ignored
    assert http.get(url, headers={"Range": "items=0-5"}).content == full  # unknown unit: ignored
    stale = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == full
    fresh = http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == full[:10]


def test_stats_by_query_and_by_accept(http: httpx.Client) -> None:
    spec = {"shape": [256, 128], "scheme": "normal", "params": {"std": 0.5}, "seed": 1}
    by_query = http.post("/v1/init?format=stats", json=spec)
    by_accept = http.post("/v1/init", json=spec, headers={"Accept": "application/json"})
    assert by_query.status_code == by_accept.status_code == 200
    assert by_query.headers["content-type"] == "application/json"
    stats = by_query.json()
    assert stats == by_accept.json()
    assert stats["numel"] == 256 * 128 and stats["shape"] == [256, 128]
    assert abs(stats["std"] - 0.5) < 0.02
    data = load_safetensors(post_init(http, spec).content)["weight"]
    assert stats["mean"] == pytest.approx(float(data.astype(np.float64).mean()), rel=1e-9, abs=1e-12)
    assert by_query.headers["etag"] != post_init(http, spec).headers["etag"]
    url = by_query.headers["content-location"]
    assert http.get(url).json() == stats
    assert http.get(url, headers={"If-None-Match": by_query.headers["etag"]}).status_code == 304


def test_schemes_catalog(http: httpx.Client) -> None:
    catalog = http.get("/v1/schemes").json()
    names = {entry["name"] for entry in catalog}
    assert {"kaiming_normal", "orthogonal", "sparse", "torch_default"} <= names
    one = http.get("/v1/schemes/kaiming_normal")
    assert one.status_code == 200 and one.json()["name"] == "kaiming_normal"
    missing = http.get("/v1/schemes/nope")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["loc"] == ["path", "name"]


def test_openapi_examples_are_accepted(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    checked = 0
    for path, method in (("/v1/init", "post"), ("/v1/bundle", "post"), ("/v1/resolve", "post")):
        body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
        for name, example in body["examples"].items():
            url = "/v1/resolve" if path == "/v1/resolve" else path
            response = http.post(
                url, json=example["value"], params={"format": "stats"} if path != "/v1/resolve" else {}
            )
            assert response.status_code == 200, (path, name, response.text)
            checked += 1
    assert checked >= 7


def test_metrics_count_requests_and_generation(live: LiveServer, http: httpx.Client) -> None:
    post_init(http, {"shape": [1000], "scheme": "uniform", "seed": 5})
    text = http.get("/metrics").text
    assert re.search(r'initserve_http_requests_total\{method="POST",route="/v1/init",status="200"\} \d', text)
    assert re.search(r'initserve_generated_elements_total\{scheme="uniform"\} (\d+)', text)
    assert 'initserve_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/init"}' in text
    assert "initserve_generations_in_flight" in text
    access = [json.loads(line) for line in live.log_text().splitlines() if '"request_id"' in line]
    assert any(entry["path"] == "/v1/init" and entry["status"] == 200 for entry in access)
