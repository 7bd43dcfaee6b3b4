"""Ambiguous requests against a real server: a JSON object that repeats a key, on every route and in
every place JSON reaches the service (bodies, the /v1/init fast path, tensor and derive tokens,
safetensors headers), is a 422 naming the key and the object that holds it — never "the last one wins"."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from initserve.api.app import create_app
from initserve.api.json_body import UniqueKeysRoute
from initserve.api.settings import Settings

from tests.live_server import LiveServer

PROBLEM = "application/problem+json"
RULE = "a key may appear only once per object"


def assert_repeated(response: httpx.Response, *expected: tuple[tuple[str | int, ...], str, str]) -> None:
    """A 422 problem whose errors are exactly ``(loc, key, "appears … in <object>")`` for each repeat."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["type"] == "urn:initserve:problem:invalid-spec"
    errors = [(tuple(e["loc"]), e["msg"]) for e in problem["errors"]]
    assert len(errors) == len(expected), errors
    for (loc, msg), (want_loc, key, where) in zip(errors, expected, strict=True):
        assert loc == want_loc
        assert f"key {key!r} appears {where}; {RULE}" in msg, msg
        assert msg in problem["detail"]


# (path, body text, expected (loc, key, "appears … in …") of each repeat)
BODIES: list[tuple[str, str, list[tuple[tuple[str | int, ...], str, str]]]] = [
    (
        "/v1/init",
        '{"shape": [2, 2], "shape": [3, 3], "scheme": "zeros", "name": "w"}',
        [(("body", "shape"), "shape", "twice in body")],
    ),
    (
        "/v1/init",
        '{"shape": [4], "scheme": "normal", "name": "w", "params": {"std": 1.0, "std": 2.0}}',
        [(("body", "params", "std"), "std", "twice in body.params")],
    ),
    (
        "/v1/init",
        '{"shape": [4], "scheme": "zeros", "name": "w", "seed": 1, "seed": 1, "seed": 1}',
        [(("body", "seed"), "seed", "3 times in body")],
    ),
    (
        "/v1/init",
        '{"shape": [4, 4], "scheme": "normal", "name": "a", "name": "b", "params": {"mean": 0, "mean": 1}}',
        [(("body", "name"), "name", "twice in body"), (("body", "params", "mean"), "mean", "twice in body.params")],
    ),
    (
        "/v1/bundle",
        '{"seed": 1, "tensors": {"fc.weight": {"shape": [2], "scheme": "zeros"},'
        ' "fc.weight": {"shape": [3], "scheme": "ones"}}}',
        [(("body", "tensors", "fc.weight"), "fc.weight", "twice in body.tensors")],
    ),
    (
        "/v1/bundle",
        '{"tensors": {"w": {"shape": [2], "scheme": "normal", "params": {"std": 1, "std": 2}}}}',
        [(("body", "tensors", "w", "params", "std"), "std", "twice in body.tensors.w.params")],
    ),
    (
        "/v1/resolve",
        '{"bundle": {"tensors": {"w": {"shape": [2], "scheme": "zeros"}}, "seed": 1, "seed": 2}}',
        [(("body", "bundle", "seed"), "seed", "twice in body.bundle")],
    ),
    (
        "/v1/resolve",
        '{"shape": [2], "scheme": "uniform", "params": {"low": 0, "high": 1, "low": -1}}',
        [(("body", "params", "low"), "low", "twice in body.params")],
    ),
    (
        "/v1/diagnose",
        '{"depth": 2, "width": 8, "activation": "tanh", "schemes": [{"scheme": "xavier_normal",'
        ' "scheme": "orthogonal"}]}',
        [(("body", "schemes", 0, "scheme"), "scheme", "twice in body.schemes[0]")],
    ),
    (
        "/v1/derive",
        '{"source": "' + "0" * 64 + '", "target": {"tensors": {}}, "rules": [{"match": "*", "action": "copy",'
        ' "action": "reinit"}]}',
        [(("body", "rules", 0, "action"), "action", "twice in body.rules[0]")],
    ),
]


@pytest.mark.parametrize(("path", "text", "expected"), BODIES, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(BODIES)])
@pytest.mark.parametrize(
    ("content_type", "query"),
    # application/json without a query is the /v1/init fast path; the others take the routed path
    [("application/json", ""), ("application/json", "?format=stats"), ("application/x-www-form-urlencoded", "")],
)
def test_repeated_keys_in_bodies_are_422_naming_key_and_object(
    http: httpx.Client,
    path: str,
    text: str,
    expected: list[tuple[tuple[str | int, ...], str, str]],
    content_type: str,
    query: str,
) -> None:
    if query and path in ("/v1/diagnose", "/v1/derive"):
        query = ""  # no ?format on these routes
    response = http.post(path + query, content=text.encode(), headers={"Content-Type": content_type})
    assert_repeated(response, *expected)


def test_the_same_body_without_the_repeat_is_served(http: httpx.Client) -> None:
    """The refusals above are about the repeat, not the rest of the body."""
    for text in (
        '{"shape": [3, 3], "scheme": "zeros", "name": "w"}',
        '{"shape": [4], "scheme": "normal", "name": "w"}',
    ):
        response = http.post("/v1/init", content=text.encode(), headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text


def test_many_repeats_are_counted_and_the_first_named(http: httpx.Client) -> None:
    text = '{"shape": [4], "scheme": "zeros", ' + ", ".join(f'"k{i}": 0, "k{i}": 1' for i in range(30)) + "}"
    response = http.post("/v1/init", content=text.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert [e["loc"] for e in problem["errors"]] == [["body", f"k{i}"] for i in range(10)]
    assert problem["detail"].endswith("; and 25 more repeated key(s)")


def _token(kind: str, text: str) -> str:
    return kind + "." + base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (
            _token("t", '{"shape": [2], "shape": [3], "scheme": "zeros", "name": "w"}'),
            [(("path", "token", "shape"), "shape", "twice in token")],
        ),
        (
            _token("t", '{"shape": [2], "scheme": "normal", "name": "w", "params": {"std": 1, "std": 2}}'),
            [(("path", "token", "params", "std"), "std", "twice in token.params")],
        ),
        (
            _token("b", '{"seed": 0, "tensors": {"w": {"shape": [1], "scheme": "zeros"}, "w": {"shape": [2]}}}'),
            [(("path", "token", "tensors", "w"), "w", "twice in token.tensors")],
        ),
    ],
)
def test_repeated_keys_in_tensor_tokens_are_422(
    http: httpx.Client, token: str, expected: list[tuple[tuple[str | int, ...], str, str]]
) -> None:
    for method in ("GET", "HEAD"):
        response = http.request(method, "/v1/tensors/" + token)
        if method == "HEAD":
            assert response.status_code == 422
        else:
            assert_repeated(response, *expected)


def test_repeated_keys_in_derive_tokens_are_422(http: httpx.Client) -> None:
    text = '{"source": "' + "0" * 64 + '", "source": "' + "1" * 64 + '", "target": {"tensors": {}}, "rules": []}'
    token = "d." + base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).rstrip(b"=").decode()
    assert_repeated(http.get("/v1/derived/" + token), (("path", "token", "source"), "source", "twice in token"))


def test_safetensors_header_repeating_a_tensor_name_is_refused(
    server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = server_factory(store=str(tmp_path / "store"))
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    for header, loc, where in [
        ('{"w": ' + entry + ', "w": ' + entry + "}", ["body", "header", "w"], "twice in header"),
        (
            '{"w": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}',
            ["body", "header", "w", "dtype"],
            "twice in header.w",
        ),
    ]:
        raw = header.encode()
        response = httpx.post(server.url + "/v1/checkpoints", content=struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
        assert response.status_code == 422, response.text
        problem: dict[str, Any] = response.json()
        assert problem["type"] == "urn:initserve:problem:invalid-checkpoint"
        assert [e["loc"] for e in problem["errors"]] == [loc]
        assert f"appears {where}; {RULE}" in problem["errors"][0]["msg"]
    assert not list((tmp_path / "store").rglob("blobs/**/*.*"))  # nothing of a refused file was stored


def test_every_route_parses_bodies_with_unique_keys() -> None:
    """A route added later without the route class would read repeated keys again, last one winning."""
    app = create_app(Settings())
    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    assert routes and all(isinstance(route, UniqueKeysRoute) for route in routes), [
        route.path for route in routes if not isinstance(route, UniqueKeysRoute)
    ]


# --- repeated query parameters ---------------------------------------------------------------------
SPEC = {"shape": [4, 4], "scheme": "normal", "name": "w"}


def _tensor_path(http: httpx.Client) -> str:
    response = http.post("/v1/resolve", json=SPEC)
    assert response.status_code == 200, response.text
    return str(response.json()["url"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("format=stats&format=safetensors", [("format", "twice ('stats', 'safetensors')")]),
        ("format=stats&format=stats", [("format", "twice ('stats', 'stats')")]),  # equal values too
        ("format=stats&%66ormat=digest", [("format", "twice ('stats', 'digest')")]),  # decoded as the router does
        (
            "format=digest&format=stats&format=digest&format=stats",
            [("format", "4 times ('digest', 'stats', 'digest', …)")],
        ),
        ("a=1&format=stats&a=2&b&b", [("a", "twice ('1', '2')"), ("b", "twice ('', '')")]),  # unknown names too
    ],
)
def test_repeated_query_parameters_are_422_on_every_route(
    http: httpx.Client, query: str, expected: list[tuple[str, str]]
) -> None:
    tensor = _tensor_path(http)
    requests = [
        ("POST", "/v1/init", SPEC),  # with a query: never the fast path, but the same answer would be
        ("POST", "/v1/bundle", {"seed": 0, "tensors": {"w": {"shape": [2], "scheme": "zeros"}}}),
        ("POST", "/v1/resolve", SPEC),
        ("POST", "/v1/diagnose", {"depth": 1, "width": 4, "activation": "tanh", "schemes": [{"scheme": "orthogonal"}]}),
        ("GET", tensor, None),
        ("GET", "/v1/schemes", None),
        ("GET", "/v1/schemes/normal", None),
        ("GET", "/v1/derived/d.AAAA", None),
        ("GET", "/healthz", None),
        ("GET", "/no/such/path", None),
    ]
    for method, path, body in requests:
        response = http.request(method, f"{path}?{query}", json=body)
        assert response.status_code == 422, (method, path, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        problem = response.json()
        assert problem["type"] == "urn:initserve:problem:invalid-spec"
        assert [tuple(e["loc"]) for e in problem["errors"]] == [("query", name) for name, _ in expected]
        for error, (name, times) in zip(problem["errors"], expected, strict=True):
            assert error["msg"] == (
                f"{name}: query parameter {name!r} is given {times}; give each query parameter once"
            ), error["msg"]
    assert http.head(f"{tensor}?{query}").status_code == 422


def test_distinct_query_parameters_still_work(http: httpx.Client) -> None:
    tensor = _tensor_path(http)
    stats = http.get(f"{tensor}?format=stats&unrelated=1")
    assert stats.status_code == 200 and stats.json()["numel"] == 16
    fast = http.post("/v1/init", json=SPEC)
    routed = http.post("/v1/init?format=safetensors&x=1", json=SPEC)
    assert routed.status_code == 200 and routed.content == fast.content
