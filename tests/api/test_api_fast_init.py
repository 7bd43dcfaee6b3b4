"""The ``POST /v1/init`` fast path (api/fast_init.py) answers exactly what the routed path answers.

``Content-Type: application/json; charset=utf-8`` is not the fast path's plain case, so the same request
sent with it takes FastAPI's routed path: every comparison below is fast path vs routed path on a real
server, and the in-process tests show which requests the fast path keeps and which it hands on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from initserve.api.app import create_app
from initserve.api.fast_init import FastInitMiddleware, init_route
from initserve.api.settings import Settings
from initserve.engine import SafetensorsFile, parse_spec
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.types import Message, Scope

from tests.live_server import LiveServer

FAST = {"Content-Type": "application/json"}
ROUTED = {"Content-Type": "application/json; charset=utf-8"}


def comparable(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}


@pytest.fixture(scope="module")
def uncached(server_factory: Callable[..., LiveServer]) -> LiveServer:
    # No response cache: both paths generate every file (nothing is answered from the other's work).
    return server_factory(response_cache_bytes="0", max_bytes=str(1 << 30))


@pytest.mark.parametrize(
    ("spec", "accept"),
    [
        ({"shape": [256, 256], "scheme": "kaiming_normal", "seed": 11}, None),
        ({"shape": [3, 5, 7], "scheme": "uniform", "dtype": "bfloat16", "seed": 2, "name": "w"}, None),
        ({"shape": [64, 32], "scheme": "orthogonal", "params": {"gain": 2.0}, "seed": 5}, None),
        ({"shape": [600, 1024], "scheme": "normal", "dtype": "float64", "seed": 3}, None),  # streamed (> 2 MiB)
        ({"shape": [40, 30], "scheme": "xavier_uniform", "seed": 4}, "application/json"),  # statistics
    ],
)
def test_the_fast_path_answers_what_the_routed_path_answers(
    uncached: LiveServer, spec: dict[str, Any], accept: str | None
) -> None:
    extra = {"Accept": accept} if accept else {}
    body = json.dumps(spec).encode()
    with uncached.client() as client:
        fast = client.post("/v1/init", content=body, headers={**FAST, **extra})
        routed = client.post("/v1/init", content=body, headers={**ROUTED, **extra})
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert comparable(fast) == comparable(routed)
    if accept is None:
        assert fast.content == SafetensorsFile(parse_spec(spec)).to_bytes()
        if len(fast.content) <= 2 << 20:  # a small file: its digest is sent before it
            assert fast.headers["repr-digest"].startswith("sha-256=:")


@pytest.mark.parametrize(
    "body",
    [
        b'{"shape": [4], "scheme": "normal"',  # not JSON
        b'{"shape": [4], "scheme": "nope"}',  # unknown scheme
        b'{"shape": [4], "scheme": "normal", "colour": 1}',  # unknown field
        b'{"shape": [4], "scheme": "normal", "params": {"std": -1}}',  # engine rule
        b'{"shape": [1048576, 1048576], "scheme": "normal"}',  # too large: 413
        b'[{"shape": [4]}]',  # not an object
        b"[" * 100_000 + b"]" * 100_000,  # nested past the recursion limit
        b'{"shape": [4], "scheme": "normal", "seed": ' + b"9" * 5000 + b"}",  # integer past 4,300 digits
        b"\xff\xfe",  # not UTF-8
    ],
)
def test_a_refused_body_gets_the_routed_paths_error(uncached: LiveServer, body: bytes) -> None:
    with uncached.client() as client:
        fast = client.post("/v1/init", content=body, headers=FAST)
        routed = client.post("/v1/init", content=body, headers=ROUTED)
    assert 400 <= fast.status_code < 500
    assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    assert fast.headers["content-type"] == "application/problem+json"


@pytest.fixture(scope="module")
def cors(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(cors_origins="https://a.example", response_cache_bytes="0")


def test_a_cross_origin_request_gets_the_cors_headers_on_the_fast_path(cors: LiveServer) -> None:
    """The fast path sits inside CORS: a browser's POST gets Access-Control-* exactly as when routed."""
    body = b'{"shape": [16, 16], "scheme": "normal", "seed": 9}'
    origin = {"Origin": "https://a.example"}
    with cors.client() as client:
        fast = client.post("/v1/init", content=body, headers={**FAST, **origin})
        routed = client.post("/v1/init", content=body, headers={**ROUTED, **origin})
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["access-control-allow-origin"] == "https://a.example"
    assert "repr-digest" in fast.headers["access-control-expose-headers"].lower()
    assert comparable(fast) == comparable(routed) and fast.content == routed.content


def requests_counted(server: LiveServer, route: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "initserve_http_requests_total" and (labels.get("route"), labels.get("status")) == (
                route,
                "200",
            ):
                return float(sample.value)
    return 0.0


def test_fast_path_requests_are_counted_under_their_route(uncached: LiveServer) -> None:
    before = requests_counted(uncached, "/v1/init")
    with uncached.client() as client:
        for seed in range(3):
            assert client.post("/v1/init", json={"shape": [8], "scheme": "normal", "seed": seed}).status_code == 200
    assert requests_counted(uncached, "/v1/init") == before + 3


# --- in process: which requests the fast path keeps -------------------------------------------------
def _call(
    middleware: FastInitMiddleware, app: Any, body: bytes, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> int:
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/init",
        "query_string": query,
        "headers": headers,
        "app": app,
        "state": {},
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }
    anyio.run(middleware, scope, receive, send)
    return status


@pytest.mark.parametrize(
    ("body", "headers", "query", "kept"),
    [
        (b'{"shape": [4], "scheme": "normal"}', [(b"content-type", b"application/json")], b"", True),
        (b'{"shape": [4], "scheme": "normal"}', [(b"content-type", b"application/json; charset=utf-8")], b"", False),
        (b'{"shape": [4], "scheme": "normal"}', [(b"content-type", b"application/json")], b"format=stats", False),
        (b'{"shape": [4], "scheme": "normal"}', [], b"", False),
        (b'{"shape": [4], "scheme": "nope"}', [(b"content-type", b"application/json")], b"", False),
        (b'{"shape": [4], "scheme": "normal"', [(b"content-type", b"application/json")], b"", False),
    ],
)
def test_the_fast_path_keeps_only_the_plain_case(
    body: bytes, headers: list[tuple[bytes, bytes]], query: bytes, kept: bool
) -> None:
    app = create_app(Settings())
    handed_on: list[bytes] = []

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        handed_on.append((await receive())["body"])  # the body arrives unread
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    status = _call(FastInitMiddleware(routed, init_route(), ()), app, body, headers, query)
    assert (status == 200, handed_on == []) == (kept, kept)
    if not kept:
        assert handed_on == [body] and status == 599


def test_with_keys_only_a_valid_key_is_kept() -> None:
    app = create_app(Settings(api_keys=[SecretStr("k1")]))
    calls: list[int] = []

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        calls.append(1)
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = FastInitMiddleware(routed, init_route(), (b"k1",))
    body = b'{"shape": [4], "scheme": "normal"}'
    plain = [(b"content-type", b"application/json")]
    assert _call(middleware, app, body, [*plain, (b"authorization", b"Bearer k1")]) == 200 and calls == []
    assert _call(middleware, app, body, [*plain, (b"x-api-key", b"k2")]) == 401 and calls == [1]
    assert _call(middleware, app, body, plain) == 401 and calls == [1, 1]
