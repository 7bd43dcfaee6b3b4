"""Every bad request gets the right 4xx, as problem+json naming the offending field."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from initserve.api.problems import ProblemError
from initserve.api.settings import Settings
from initserve.api.targets import build_target
from initserve.engine.errors import human_bytes

OK = {"shape": [4, 4], "scheme": "normal"}
BIG = 1 << 40

# (description, method, path, body or raw bytes, expected status, slug, expected loc)
CASES: list[tuple[str, str, str, Any, int, str, list[Any]]] = [
    (
        "negative dim",
        "POST",
        "/v1/init",
        {"shape": [4, -3], "scheme": "normal"},
        422,
        "invalid-spec",
        ["body", "shape", 1],
    ),
    ("rank 9", "POST", "/v1/init", {"shape": [1] * 9, "scheme": "normal"}, 422, "invalid-spec", ["body", "shape"]),
    ("float dim", "POST", "/v1/init", {"shape": [4.5], "scheme": "normal"}, 422, "invalid-spec", ["body", "shape", 0]),
    (
        "bool dim",
        "POST",
        "/v1/init",
        {"shape": [True, 2], "scheme": "normal"},
        422,
        "invalid-spec",
        ["body", "shape", 0],
    ),
    (
        "shape not a list",
        "POST",
        "/v1/init",
        {"shape": "4x4", "scheme": "normal"},
        422,
        "invalid-spec",
        ["body", "shape"],
    ),
    ("missing shape", "POST", "/v1/init", {"scheme": "normal"}, 422, "invalid-spec", ["body", "shape"]),
    ("missing scheme", "POST", "/v1/init", {"shape": [2]}, 422, "invalid-spec", ["body", "scheme"]),
    (
        "unknown scheme",
        "POST",
        "/v1/init",
        {"shape": [2], "scheme": "gaussian"},
        422,
        "invalid-spec",
        ["body", "scheme"],
    ),
    (
        "unknown param",
        "POST",
        "/v1/init",
        {**OK, "params": {"stdev": 1.0}},
        422,
        "invalid-spec",
        ["body", "params", "stdev"],
    ),
    ("bool param", "POST", "/v1/init", {**OK, "params": {"std": True}}, 422, "invalid-spec", ["body", "params", "std"]),
    (
        "NaN param",
        "POST",
        "/v1/init",
        b'{"shape":[2],"scheme":"normal","params":{"std":NaN}}',
        422,
        "invalid-spec",
        ["body", "params", "std"],
    ),
    (
        "Infinity param",
        "POST",
        "/v1/init",
        b'{"shape":[2],"scheme":"uniform","params":{"high":Infinity}}',
        422,
        "invalid-spec",
        ["body", "params", "high"],
    ),
    (
        "negative std",
        "POST",
        "/v1/init",
        {**OK, "params": {"std": -1.0}},
        422,
        "invalid-spec",
        ["body", "params", "std"],
    ),
    (
        "sparsity missing",
        "POST",
        "/v1/init",
        {"shape": [4, 4], "scheme": "sparse"},
        422,
        "invalid-spec",
        ["body", "params", "sparsity"],
    ),
    (
        "sparsity above 1",
        "POST",
        "/v1/init",
        {"shape": [4, 4], "scheme": "sparse", "params": {"sparsity": 1.5}},
        422,
        "invalid-spec",
        ["body", "params", "sparsity"],
    ),
    (
        "bad mode",
        "POST",
        "/v1/init",
        {"shape": [4, 4], "scheme": "kaiming_normal", "params": {"mode": "fan_sideways"}},
        422,
        "invalid-spec",
        ["body", "params", "mode"],
    ),
    ("unknown dtype", "POST", "/v1/init", {**OK, "dtype": "int8"}, 422, "invalid-spec", ["body", "dtype"]),
    ("unknown layout", "POST", "/v1/init", {**OK, "layout": "caffe"}, 422, "invalid-spec", ["body", "layout"]),
    (
        "keras spelling, conv kernel, no layout",
        "POST",
        "/v1/init",
        {"shape": [3, 3, 16, 32], "scheme": "Orthogonal"},
        422,
        "invalid-spec",
        ["body", "layout"],
    ),
    ("seed negative", "POST", "/v1/init", {**OK, "seed": -1}, 422, "invalid-spec", ["body", "seed"]),
    ("seed 2^64", "POST", "/v1/init", {**OK, "seed": 1 << 64}, 422, "invalid-spec", ["body", "seed"]),
    ("seed bool", "POST", "/v1/init", {**OK, "seed": True}, 422, "invalid-spec", ["body", "seed"]),
    ("seed string", "POST", "/v1/init", {**OK, "seed": "42"}, 422, "invalid-spec", ["body", "seed"]),
    (
        "xavier on 1-D",
        "POST",
        "/v1/init",
        {"shape": [8], "scheme": "xavier_uniform"},
        422,
        "invalid-spec",
        ["body", "shape"],
    ),
    ("eye on 3-D", "POST", "/v1/init", {"shape": [2, 2, 2], "scheme": "eye"}, 422, "invalid-spec", ["body", "shape"]),
    ("dirac on 2-D", "POST", "/v1/init", {"shape": [2, 2], "scheme": "dirac"}, 422, "invalid-spec", ["body", "shape"]),
    ("unknown top-level key", "POST", "/v1/init", {**OK, "colour": "red"}, 422, "invalid-spec", ["body", "colour"]),
    ("bad name", "POST", "/v1/init", {**OK, "name": "a\u0007b"}, 422, "invalid-spec", ["body", "name"]),
    ("slice out of range", "POST", "/v1/init", {**OK, "slice": [[0, 9]]}, 422, "invalid-spec", ["body", "slice", 0]),
    ("slice not pairs", "POST", "/v1/init", {**OK, "slice": [[0, 1, 2]]}, 422, "invalid-spec", ["body", "slice", 0]),
    ("body is an array", "POST", "/v1/init", [1, 2], 422, "invalid-spec", ["body"]),
    ("empty body", "POST", "/v1/init", b"", 422, "invalid-spec", ["body"]),
    ("malformed JSON", "POST", "/v1/init", b'{"shape": [2,', 400, "malformed-json", ["body"]),
    ("too large", "POST", "/v1/init", {"shape": [BIG, BIG], "scheme": "normal"}, 413, "too-large", ["body", "shape"]),
    (
        "too large dtype",
        "POST",
        "/v1/init",
        {"shape": [1 << 30, 4], "scheme": "zeros", "dtype": "float64"},
        413,
        "too-large",
        ["body", "shape"],
    ),
    ("bundle empty", "POST", "/v1/bundle", {"tensors": {}}, 422, "invalid-spec", ["body", "tensors"]),
    (
        "bundle tensor seed",
        "POST",
        "/v1/bundle",
        {"tensors": {"w": {**OK, "seed": 1}}},
        422,
        "invalid-spec",
        ["body", "tensors", "w", "seed"],
    ),
    (
        "bundle bad dim",
        "POST",
        "/v1/bundle",
        {"tensors": {"w": {"shape": [-1], "scheme": "zeros"}}},
        422,
        "invalid-spec",
        ["body", "tensors", "w", "shape", 0],
    ),
    (
        "bundle bad scheme",
        "POST",
        "/v1/bundle",
        {"tensors": {"w": {"shape": [1], "scheme": "x"}}},
        422,
        "invalid-spec",
        ["body", "tensors", "w", "scheme"],
    ),
    (
        "bundle too large",
        "POST",
        "/v1/bundle",
        {"tensors": {"a": {"shape": [BIG], "scheme": "zeros"}}},
        413,
        "too-large",
        ["body", "tensors"],
    ),
    (
        "resolve bad bundle",
        "POST",
        "/v1/resolve",
        {"bundle": {"tensors": {"w": {"shape": [2]}}}},
        422,
        "invalid-spec",
        ["body", "bundle", "tensors", "w", "scheme"],
    ),
    (
        "resolve bad spec",
        "POST",
        "/v1/resolve",
        {"shape": [2], "scheme": "normal", "dtype": 3},
        422,
        "invalid-spec",
        ["body", "dtype"],
    ),
    ("format bad", "POST", "/v1/init?format=npy", OK, 422, "invalid-spec", ["query", "format"]),
    ("token no kind", "GET", "/v1/tensors/abc", None, 400, "invalid-token", ["path", "token"]),
    ("token bad base64", "GET", "/v1/tensors/t.@@@@", None, 400, "invalid-token", ["path", "token"]),
    ("token not JSON", "GET", "/v1/tensors/t.bm90IGpzb24", None, 400, "invalid-token", ["path", "token"]),
    ("token JSON array", "GET", "/v1/tensors/t.WzEsMl0", None, 400, "invalid-token", ["path", "token"]),
    (
        "token invalid spec",
        "GET",
        "/v1/tensors/t.eyJzaGFwZSI6Wy0xXSwic2NoZW1lIjoiemVyb3MifQ",
        None,
        422,
        "invalid-spec",
        ["path", "token", "shape", 0],
    ),
    ("unknown scheme page", "GET", "/v1/schemes/nope", None, 404, "not-found", ["path", "name"]),
]


def _send(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    if body is None:
        return http.request(method, path)
    if isinstance(body, bytes):
        return http.request(method, path, content=body, headers={"Content-Type": "application/json"})
    return http.request(method, path, json=body)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("what", "method", "path", "body", "status", "slug", "loc"), CASES, ids=[c[0] for c in CASES])
def test_bad_request(
    http: httpx.Client, what: str, method: str, path: str, body: Any, status: int, slug: str, loc: list[Any]
) -> None:
    response = _send(http, method, path, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:initserve:problem:{slug}"
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["instance"] == path.split("?")[0]
    locs = [error["loc"] for error in problem["errors"]]
    assert loc in locs, locs
    for error in problem["errors"]:
        assert error["msg"], error
    assert "Traceback" not in response.text


def test_unknown_route_is_a_problem(http: httpx.Client) -> None:
    response = http.get("/v2/nothing")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:initserve:problem:not-found"
    assert http.get("/v1/init").status_code == 405


def test_messages_name_the_field_and_rule(http: httpx.Client) -> None:
    problem = _send(http, "POST", "/v1/init", {"shape": [4, -3], "scheme": "normal"}).json()
    assert problem["errors"][0]["msg"] == "shape[1] must be ≥ 0, got -3"
    problem = _send(http, "POST", "/v1/init", {**OK, "params": {"std": True}}).json()
    assert "params.std" in problem["detail"] and "boolean" in problem["detail"]
    # The value's kind in JSON's words (what the caller sent), never a Python type name such as NoneType.
    for value, kind in ((None, "null"), ([1], "an array"), ({"a": 1}, "an object")):
        problem = _send(http, "POST", "/v1/init", {**OK, "params": {"std": value}}).json()
        # The scheme's own parameter validation answers (it knows std is a number), at body.params.std.
        assert problem["errors"][0]["loc"] == ["body", "params", "std"], problem
        assert problem["errors"][0]["msg"] == f"must be a number, got {kind}", problem
        assert problem["detail"] == f"params.std: must be a number, got {kind}", problem


def test_size_limit_is_decided_in_microseconds_without_allocating() -> None:
    settings = Settings(max_bytes=8 << 30)
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(ProblemError) as caught:
            build_target("t", {"shape": [BIG, BIG], "scheme": "normal"}, settings, ("body",))
    per_call = (time.perf_counter() - started) / 100
    assert caught.value.status == 413
    assert per_call < 0.005, f"{per_call * 1e6:.0f} µs per refused spec"


LIVE_MAX_BYTES = 3 << 30  # INITSERVE_MAX_BYTES of conftest's `live` server


# Past the engine's own bound (2^62 elements, the counter's range) a result is still "too large": 413 at
# the shape, naming the server's configured limit (3 GiB on this server), never the engine's 16 EiB.
BEYOND_ENGINE = [1 << 40, 1 << 40]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/init", {"shape": BEYOND_ENGINE, "scheme": "normal", "name": "w"}, ["body", "shape"]),
        ("/v1/init?format=stats", {"shape": BEYOND_ENGINE, "scheme": "zeros", "dtype": "float16"}, ["body", "shape"]),
        ("/v1/resolve", {"shape": [1 << 62, 2], "scheme": "zeros", "dtype": "float64"}, ["body", "shape"]),
        (
            "/v1/bundle",
            {"tensors": {"a": {"shape": BEYOND_ENGINE, "scheme": "zeros"}}},
            ["body", "tensors", "a", "shape"],
        ),
        (
            "/v1/bundle?format=stats",
            {"tensors": {"a": {"shape": [2], "scheme": "zeros"}, "b": {"shape": BEYOND_ENGINE, "scheme": "zeros"}}},
            ["body", "tensors", "b", "shape"],
        ),
        (
            "/v1/resolve",
            {"bundle": {"tensors": {"a": {"shape": BEYOND_ENGINE, "scheme": "zeros", "dtype": "bfloat16"}}}},
            ["body", "bundle", "tensors", "a", "shape"],
        ),
    ],
    ids=["init", "init-stats-float16", "resolve-float64", "bundle", "bundle-second-tensor", "resolve-bundle"],
)
def test_beyond_the_engine_bound_is_413_naming_the_configured_limit(
    http: httpx.Client, path: str, body: Any, loc: list[Any]
) -> None:
    response = _send(http, "POST", path, body)
    assert response.status_code == 413, response.text
    problem = response.json()
    assert problem["type"] == "urn:initserve:problem:too-large"
    assert [error["loc"] for error in problem["errors"]] == [loc]
    assert f"above the limit of {human_bytes(LIVE_MAX_BYTES)}" in problem["detail"], problem["detail"]
    assert "EiB (" not in problem["detail"].split("above the limit")[1]


def test_a_bundle_with_a_bad_spec_and_a_huge_tensor_names_the_bad_spec(http: httpx.Client) -> None:
    body = {"tensors": {"a": {"shape": BEYOND_ENGINE, "scheme": "zeros"}, "b": {"shape": [-1], "scheme": "zeros"}}}
    response = _send(http, "POST", "/v1/bundle", body)
    assert response.status_code == 422, response.text
    assert ["body", "tensors", "b", "shape", 0] in [error["loc"] for error in response.json()["errors"]]


def test_a_token_beyond_the_engine_bound_is_413(http: httpx.Client) -> None:
    canonical = json.dumps({"shape": BEYOND_ENGINE, "scheme": "zeros"}, separators=(",", ":"))
    token = "t." + base64.urlsafe_b64encode(canonical.encode()).rstrip(b"=").decode()
    response = http.get("/v1/tensors/" + token)
    assert response.status_code == 413, response.text
    assert response.json()["errors"][0]["loc"] == ["path", "token", "shape"]
    assert f"above the limit of {human_bytes(LIVE_MAX_BYTES)}" in response.json()["detail"]


# A refused value is shown as the JSON the caller sent: null, "2", {"a": 1}, 7 — never Python's None,
# '2', {'a': 1} or a type name such as int.
PYTHON_WORDS = ("None", "True", "False", "{'", "['", "got '", "got int", "got float", "got dict", "got list")


@pytest.mark.parametrize(
    ("path", "body", "loc", "shown"),
    [
        ("/v1/init", {"shape": [None], "scheme": "zeros"}, ["body", "shape", 0], "got null"),
        ("/v1/init", {"shape": ["2"], "scheme": "zeros"}, ["body", "shape", 0], 'got "2"'),
        ("/v1/init", {"shape": {"a": 1}, "scheme": "zeros"}, ["body", "shape"], 'got {"a": 1}'),
        ("/v1/init", {"shape": [2], "scheme": None}, ["body", "scheme"], "got null"),
        ("/v1/init", {"shape": [2], "scheme": "zeros", "seed": None}, ["body", "seed"], "got null"),
        ("/v1/init", {"shape": [2], "scheme": "zeros", "seed": "7"}, ["body", "seed"], 'got "7"'),
        ("/v1/init", {"shape": [2], "scheme": "zeros", "dtype": None}, ["body", "dtype"], "got null"),
        ("/v1/init", {"shape": [2], "scheme": "zeros", "layout": ["torch"]}, ["body", "layout"], 'got ["torch"]'),
        ("/v1/init", {"shape": [2], "scheme": "zeros", "params": None}, ["body", "params"], "got null"),
        ("/v1/init", {"shape": [2], "scheme": "zeros", "name": None}, ["body", "name"], "got null"),
        (
            "/v1/init",
            {"shape": [2, 2], "scheme": "kaiming_uniform", "params": {"mode": 1}},
            ["body", "params", "mode"],
            "got 1",
        ),
        (
            "/v1/init",
            {"shape": [2, 2], "scheme": "kaiming_uniform", "params": {"mode": 2.5}},
            ["body", "params", "mode"],
            "got 2.5",
        ),
        ("/v1/init", None, ["body"], "got null"),
        ("/v1/bundle", {"tensors": {"w": None}}, ["body", "tensors", "w"], "got null"),
        (
            "/v1/bundle",
            {"seed": None, "tensors": {"w": {"shape": [2], "scheme": "zeros"}}},
            ["body", "seed"],
            "got null",
        ),
        ("/v1/resolve", {"bundle": None}, ["body", "bundle"], "got null"),
        ("/v1/resolve", {"shape": [2], "scheme": {"name": "zeros"}}, ["body", "scheme"], 'got {"name": "zeros"}'),
    ],
)
def test_refused_values_are_shown_as_the_json_sent(
    http: httpx.Client, path: str, body: Any, loc: list[Any], shown: str
) -> None:
    response = _send(http, "POST", path, json.dumps(body).encode())
    assert response.status_code == 422, response.text
    messages = [error["msg"] for error in response.json()["errors"] if error["loc"] == loc]
    assert messages, response.text
    assert any(shown in msg for msg in messages), messages
    for text in (*messages, response.json()["detail"]):
        assert not any(word in text for word in PYTHON_WORDS), text
