"""Reliability suite (issue #11), ``-m slow``: a real server process under fuzzing, floods, slow and
vanishing clients, a corrupting proxy, SIGTERM, and a bounded mixed load run.

Figures (fuzz counts, load-run percentiles, peak RSS) are printed with ``-s`` so a run can be quoted;
the bounds asserted are the ones docs/deployment.md documents ("Reliability figures").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import resource
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from initserve.engine import CATALOG

from tests.client.fault_proxy import FaultProxy
from tests.live_server import LiveServer, start_server

pytestmark = pytest.mark.slow

# Documented in docs/deployment.md ("Reliability figures"): 64 connections on 2 cores that also run the
# load generator keep the event loop busy, so /healthz waits behind other callbacks (measured p99 ≈ 0.47 s).
HEALTHZ_P99_MS = 1000.0
RSS_BUDGET_MIB = 512.0  # 80 MiB + 45 MiB × 4 slots + the 64 MiB response cache, with slack (measured 333)
FUZZ_COUNTS: Counter[str] = Counter()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def target(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(header_timeout="2", max_bytes=str(9 << 30))


# --- hypothesis fuzz of specs and tokens --------------------------------------------------------
EXTREMES = [0, -0.0, 1, -1, 0.5, 2, 1e-320, 1e-300, 1e-30, 1e30, 1e154, 1e300, 9e307, 1.7976931348623157e308]
NUMBERS = st.sampled_from([*EXTREMES, -1e308, 2**62, 2**63, 2**64, 10**400, -(10**40)]) | st.floats(
    allow_nan=False, allow_infinity=False
)
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=3))


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    scheme = draw(st.sampled_from(sorted(CATALOG)) | st.text(max_size=12))
    params: dict[str, Any] = {}
    entry = CATALOG.get(scheme)
    names = [p.name for p in entry.params] if entry else []
    for name in draw(st.lists(st.sampled_from(names or ["x"]) | st.text(max_size=6), unique=True, max_size=4)):
        params[name] = draw(NUMBERS | JUNK | st.sampled_from(["fan_in", "fan_out", "relu", "uniform", "normal"]))
    # half the shapes fit every scheme's rank (so the params are what is tested), half are anything
    shape = draw(
        st.sampled_from([[3, 4], [4, 2, 3], [5, 5]])
        | st.lists(st.integers(0, 64) | st.sampled_from([0, 1, 2**31, 2**62, 2**63]), max_size=5)
    )
    body: dict[str, Any] = {"shape": shape, "scheme": scheme, "params": params}
    if draw(st.booleans()):
        body["dtype"] = draw(st.sampled_from(["float32", "float64", "float16", "bfloat16", "int8"]))
    if draw(st.booleans()):
        body["seed"] = draw(st.integers(-5, 2**65))
    if draw(st.booleans()):
        body["layout"] = draw(st.sampled_from(["torch", "keras", "jax"]))
    if draw(st.booleans()) and shape:
        body["slice"] = [[draw(st.integers(-1, 70)), draw(st.integers(-1, 70))] for _ in shape[:2]]
    if draw(st.booleans()):
        body["name"] = draw(st.text(max_size=10))
    return body


def check_answer(response: httpx.Response, kind: str) -> None:
    FUZZ_COUNTS[f"{kind} {response.status_code}"] += 1
    assert response.status_code < 500, f"{kind}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        problem = response.json()
        assert problem["errors"] and all(error["loc"] for error in problem["errors"]), problem
    elif response.headers.get("content-type", "").startswith("application/json"):
        json.loads(response.content)  # strict JSON: non-finite figures must be null


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=specs(), stats=st.booleans())
def test_fuzzed_specs_never_get_a_5xx(target: LiveServer, body: dict[str, Any], stats: bool) -> None:
    with httpx.Client(base_url=target.url, timeout=120) as client:
        response = client.post("/v1/init" + ("?format=stats" if stats else ""), json=body)
        check_answer(response, "spec")
        text = json.dumps(body)
        token = "t." + base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).rstrip(b"=").decode()
        check_answer(client.get("/v1/tensors/" + token), "spec-token")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.binary(max_size=600) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzzed_tokens_and_bodies_never_get_a_5xx(target: LiveServer, payload: bytes) -> None:
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    route = random.choice(["/v1/init", "/v1/bundle", "/v1/resolve", "/v1/derive"])
    with httpx.Client(base_url=target.url, timeout=60) as client:
        check_answer(client.get("/v1/tensors/" + random.choice("tb") + "." + encoded), "token")
        check_answer(client.get("/v1/derived/d." + encoded), "derived-token")
        check_answer(client.post(route, content=payload, headers={"content-type": "application/json"}), "body")


def test_report_fuzz_counts() -> None:
    print("\nfuzz counts:", dict(sorted(FUZZ_COUNTS.items())), "total", sum(FUZZ_COUNTS.values()))
    assert sum(FUZZ_COUNTS.values()) >= 2400


# --- heads: floods and slowloris ----------------------------------------------------------------
def test_concurrent_header_floods_keep_memory_flat(target: LiveServer) -> None:
    before = rss_mib(target.pid)
    flood = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1024) for i in range(1024))

    def one() -> bytes:
        with socket.create_connection(("127.0.0.1", target.port), timeout=30) as sock:
            with contextlib.suppress(OSError):  # the server answered 431 and closed before taking it all
                sock.sendall(flood + b"\r\n")
            return sock.recv(64)

    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(one())) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer.startswith(b"HTTP/1.1 431") for answer in answers), Counter(a[:12] for a in answers)
    assert rss_mib(target.pid) - before < 64
    assert httpx.get(target.url + "/healthz").status_code == 200


def test_a_thousand_slowloris_sockets(target: LiveServer) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(1000, soft - 100)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", target.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        started = time.monotonic()
        assert httpx.get(target.url + "/healthz", timeout=5).status_code == 200
        print(f"\nslowloris: {count} partial heads open, /healthz in {1000 * (time.monotonic() - started):.1f} ms")
        time.sleep(3.5)  # header timeout 2 s
        timed_out = 0
        for sock in sockets:
            sock.settimeout(2)
            timed_out += sock.recv(32).startswith(b"HTTP/1.1 408")
        assert timed_out == count
    finally:
        for sock in sockets:
            sock.close()


# --- abandoned stats ----------------------------------------------------------------------------
def in_flight(server: LiveServer) -> int:
    return int(httpx.get(server.url + "/readyz").json()["generations_in_flight"])


def test_abandoned_stats_of_every_slot_free_them_at_once(target: LiveServer) -> None:
    capacity = int(httpx.get(target.url + "/readyz").json()["generation_capacity"])
    sockets = []
    for seed in range(capacity):
        body = json.dumps({"shape": [1 << 27], "scheme": "normal", "seed": 700 + seed}).encode()
        sock = socket.create_connection(("127.0.0.1", target.port))
        sock.sendall(
            b"POST /v1/init?format=stats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        sockets.append(sock)
    deadline = time.monotonic() + 10
    while in_flight(target) < capacity and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight(target) == capacity
    busy = httpx.post(target.url + "/v1/init", json={"shape": [1 << 20], "scheme": "normal", "seed": 5})
    assert busy.status_code == 503 and busy.headers["retry-after"]
    for sock in sockets:
        sock.close()
    started = time.monotonic()
    while in_flight(target) and time.monotonic() - started < 5:
        time.sleep(0.02)
    print(
        f"\nabandoned stats: {capacity} slots free {1000 * (time.monotonic() - started):.0f} ms after the disconnects"
    )
    assert in_flight(target) == 0


# --- slice runs: memory per request does not grow with the number of runs -------------------------
@pytest.mark.parametrize(
    "spec",
    [
        {"shape": [16_000_000, 2], "scheme": "normal", "slice": [[0, 16_000_000], [0, 1]]},
        {"shape": [1 << 32, 2], "scheme": "normal", "dtype": "float16", "slice": [[0, 1 << 32], [0, 1]]},
    ],
    ids=["16M-runs", "2^32-runs-float16"],
)
def test_a_range_of_a_many_run_slice_keeps_memory_flat(target: LiveServer, spec: dict[str, Any]) -> None:
    with httpx.Client(base_url=target.url, timeout=120) as client:
        resolved = client.post("/v1/resolve", json=spec)
        if resolved.status_code == 413:
            pytest.skip("larger than this server's INITSERVE_MAX_BYTES")
        url = resolved.json()["url"]
        before = rss_mib(target.pid)
        response = client.get(url, headers={"Range": f"bytes={resolved.json()['content_length'] - 8}-"})
        assert response.status_code == 206 and len(response.content) == 8
    assert rss_mib(target.pid) - before < 64


# --- corrupting proxy, parallel ranged download --------------------------------------------------
def test_corrupting_proxy_never_reaches_the_cache(target: LiveServer, tmp_path: Path) -> None:
    from initserve_client import Client

    spec = {"shape": [1 << 25], "scheme": "uniform", "seed": 12, "name": "weight"}  # 128 MiB: two leaves, four ranges
    with Client(base_url=target.url, cache=False, parallel=1) as client:
        good = client.tensor(**spec).tobytes()  # type: ignore[arg-type]
    # each of the four ranges is ~32 MiB on its own connection: byte 20 M of the first three is flipped
    proxy = FaultProxy(target.port, flip_at=20_000_000, flips=3)
    proxy.start()
    try:
        with Client(base_url=proxy.url, cache_dir=tmp_path, parallel=4) as client:
            got = client.tensor(**spec).tobytes()  # type: ignore[arg-type]
    finally:
        proxy.stop()
    assert proxy.flipped >= 1
    assert got == good
    with Client(base_url=target.url, cache_dir=tmp_path) as client:
        assert client.tensor(**spec).tobytes() == good  # type: ignore[arg-type]


# --- SIGTERM with stalled clients ---------------------------------------------------------------
@pytest.fixture
def doomed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("doomed"), {"INITSERVE_GRACEFUL_SHUTDOWN_TIMEOUT": "3"})
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_sigterm_with_stalled_streams_and_stats(doomed: LiveServer) -> None:
    sockets = []
    for i, (path, body) in enumerate(
        [
            ("/v1/init", {"shape": [1 << 28], "scheme": "uniform", "seed": 1}),
            ("/v1/init", {"shape": [1 << 28], "scheme": "normal", "seed": 2}),
            ("/v1/init?format=stats", {"shape": [1 << 28], "scheme": "normal", "seed": 3}),
        ]
    ):
        sock = socket.create_connection(("127.0.0.1", doomed.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = json.dumps(body).encode()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        if i < 2:
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sockets.append(sock)
    half_open = socket.create_connection(("127.0.0.1", doomed.port))
    half_open.sendall(b"GET /healthz HTTP/1.1\r\n")
    sockets.append(half_open)
    time.sleep(1)
    started = time.monotonic()
    doomed.process.send_signal(signal.SIGTERM)
    try:
        doomed.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("no exit within 20 s of SIGTERM")
    elapsed = time.monotonic() - started
    print(f"\nSIGTERM with 2 stalled streams, 1 stats run and a half-open head: exit after {elapsed:.1f} s")
    assert elapsed < 3 + 5
    for sock in sockets:
        sock.close()


# --- bounded load run ---------------------------------------------------------------------------
LOAD_SECONDS = 60
CONNECTIONS = 64


async def _load(server: LiveServer) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    missing_retry_after = 0
    health_ms: list[float] = []
    rss: list[float] = []
    stop = time.monotonic() + LOAD_SECONDS
    repeated = {"shape": [256, 256], "scheme": "kaiming_uniform", "seed": 1}

    async def worker(index: int) -> None:
        nonlocal missing_retry_after
        rng = random.Random(index)
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            while time.monotonic() < stop:
                kind = rng.random()
                if kind < 0.35:
                    request = client.build_request(
                        "POST",
                        "/v1/init",
                        json={"shape": [128, rng.randrange(1, 512)], "scheme": "normal", "seed": rng.randrange(2**63)},
                    )
                elif kind < 0.7:
                    request = client.build_request("POST", "/v1/init", json=repeated)
                elif kind < 0.9:
                    request = client.build_request(
                        "POST",
                        "/v1/init?format=stats",
                        json={"shape": [1 << 18], "scheme": "truncated_normal", "seed": rng.randrange(1000)},
                    )
                else:
                    request = client.build_request(
                        "POST", "/v1/init", json={"shape": [1 << 22], "scheme": "uniform", "seed": rng.randrange(10)}
                    )  # 16 MiB, streamed
                response = await client.send(request, stream=True)
                async for _ in response.aiter_raw(1 << 20):
                    pass
                await response.aclose()
                statuses[response.status_code] += 1
                if response.status_code == 503:
                    missing_retry_after += "retry-after" not in response.headers
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")) * rng.random())

    async def health() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = await client.get("/healthz")
                health_ms.append(1000 * (time.perf_counter() - started))
                statuses[response.status_code] += 0  # counted apart: only the load's answers are tallied
                assert response.status_code == 200
                rss.append(rss_mib(server.pid))
                await asyncio.sleep(0.1)

    await asyncio.gather(*(worker(i) for i in range(CONNECTIONS)), health())
    health_ms.sort()
    return {
        "statuses": dict(statuses),
        "missing_retry_after": missing_retry_after,
        "healthz_p50_ms": statistics.median(health_ms),
        "healthz_p99_ms": health_ms[int(0.99 * (len(health_ms) - 1))],
        "healthz_samples": len(health_ms),
        "rss_peak_mib": max(rss),
        "rss_start_mib": rss[0],
    }


def test_bounded_mixed_load_run(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > CONNECTIONS * 2
    figures = asyncio.run(_load(server))
    print("\nload run:", json.dumps(figures, sort_keys=True))
    assert not [status for status in figures["statuses"] if status >= 500 and status != 503], figures
    assert figures["missing_retry_after"] == 0
    assert figures["statuses"].get(200, 0) > 0
    assert figures["healthz_p99_ms"] < HEALTHZ_P99_MS, figures
    assert figures["rss_peak_mib"] < RSS_BUDGET_MIB, figures
