"""Back-pressure, body limits, API keys and streaming memory, each against its own real server."""

from __future__ import annotations

import hashlib
import socket
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.live_server import LiveServer

GiB = 1 << 30
# uniform is the engine's fastest scheme: the stream is limited by HTTP, not by generation.
BIG_SPEC = {"shape": [GiB // 2], "scheme": "uniform", "seed": 11, "name": "big"}  # 2 GiB of float32


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def wait_until_idle(client: httpx.Client) -> None:
    """The slot is released just after the last byte is sent; give the server that moment."""
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["generations_in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/readyz").json()["generations_in_flight"] == 0


@pytest.fixture(scope="module")
def single_slot(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(max_concurrent_generations="1", retry_after_seconds="3", max_bytes=str(3 * GiB))


def test_two_gib_stream_keeps_memory_flat_and_health_fast(single_slot: LiveServer) -> None:
    pid = single_slot.pid
    baseline = rss_kib(pid, "VmRSS")
    received = 0
    health_ms: list[float] = []
    health_statuses: list[int] = []
    in_flight: list[int] = []
    stop = threading.Event()

    # Assertions inside a thread would only kill the thread: record, then assert in the test.
    def probe() -> None:
        with httpx.Client(base_url=single_slot.url, timeout=5) as client:
            while not stop.is_set():
                started = time.perf_counter()
                health_statuses.append(client.get("/healthz").status_code)
                in_flight.append(client.get("/readyz").json()["generations_in_flight"])
                health_ms.append((time.perf_counter() - started) * 1000 / 2)
                time.sleep(0.05)

    with (
        httpx.Client(base_url=single_slot.url, timeout=120) as client,
        client.stream("POST", "/v1/init", json=BIG_SPEC) as response,
    ):
        assert response.status_code == 200
        expected = int(response.headers["content-length"])
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            for chunk in response.iter_raw(1 << 20):
                received += len(chunk)
        finally:
            stop.set()
            prober.join()
    assert received == expected > 2 * GiB - 1
    growth_mib = (rss_kib(pid, "VmHWM") - baseline) / 1024
    assert growth_mib < 150, f"server RSS grew {growth_mib:.0f} MiB while streaming 2 GiB"
    assert len(health_ms) >= 5
    assert set(health_statuses) == {200}
    # The stream holds the one slot; the last probe may land just after it was released.
    assert in_flight[0] == 1 and set(in_flight) <= {0, 1}
    # Generation runs off the event loop: a probe waits for a scheduling slice, never for a chunk's
    # generation. The typical probe says so (a blocked loop would delay most of them, generation being
    # continuous); the slowest only has to stay far below a blocked loop's seconds, so a busy machine's
    # scheduler hiccup does not fail the test.
    slowest, typical = max(health_ms), statistics.median(health_ms)
    assert typical < 50, f"median /healthz during the stream: {typical:.1f} ms (slowest {slowest:.1f} ms)"
    assert slowest < 1000, f"slowest /healthz during the stream: {slowest:.1f} ms"


def test_saturation_gives_503_and_the_first_completes_intact(single_slot: LiveServer) -> None:
    spec = {"shape": [1 << 26], "scheme": "normal", "seed": 5, "name": "sat"}  # 256 MiB, slow enough
    with httpx.Client(base_url=single_slot.url, timeout=120) as client:
        reference = client.post("/v1/resolve", json=spec).json()
        with client.stream("POST", "/v1/init", json=spec) as first:
            assert first.status_code == 200
            body = bytearray()
            iterator = first.iter_raw(1 << 20)
            body += next(iterator)
            second = client.post("/v1/init", json=spec)
            assert second.status_code == 503
            assert second.headers["retry-after"] == "3"
            assert second.json()["type"] == "urn:initserve:problem:saturated"
            for chunk in iterator:
                body += chunk
        assert len(body) == reference["content_length"]
        wait_until_idle(client)
        # intact: byte-identical to an unhurried download of the same tensor URL
        digest = hashlib.sha256()
        with client.stream("GET", reference["url"]) as again:
            for chunk in again.iter_raw(1 << 20):
                digest.update(chunk)
        assert hashlib.sha256(body).hexdigest() == digest.hexdigest()
        assert "initserve_generations_rejected_total 1.0" in client.get("/metrics").text


def test_disconnect_frees_the_slot(single_slot: LiveServer) -> None:
    with httpx.Client(base_url=single_slot.url, timeout=60) as client:
        with client.stream("POST", "/v1/init", json=BIG_SPEC) as response:
            next(response.iter_raw(1 << 16))
        wait_until_idle(client)


@pytest.fixture(scope="module")
def keyed(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(api_keys="alpha-key, beta-key", max_body_bytes="2048")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": "alpha-keyX"}, 401),
        ({"Authorization": "Bearer alpha-key"}, 200),
        ({"X-API-Key": "beta-key"}, 200),
    ],
)
def test_api_keys(keyed: LiveServer, headers: dict[str, str], status: int) -> None:
    with keyed.client() as client:
        response = client.post("/v1/init", json={"shape": [3], "scheme": "ones"}, headers=headers)
        assert response.status_code == status, response.text
        if status == 401:
            assert response.headers["www-authenticate"].startswith('Bearer realm="initserve"')
            # RFC 6750: a presented key that is not valid is an invalid_token; no key at all is not
            assert response.headers["www-authenticate"].endswith(', error="invalid_token"') == bool(headers)
            assert response.json()["type"] == "urn:initserve:problem:unauthorized"
        assert client.get("/healthz").status_code == 200  # health and metrics stay open by default
        assert client.get("/metrics").status_code == 200
    assert "alpha-key" not in keyed.log_text() and "beta-key" not in keyed.log_text()


def test_body_limit_by_content_length_and_by_stream(keyed: LiveServer) -> None:
    auth = {"X-API-Key": "alpha-key", "Content-Type": "application/json"}
    big = b'{"shape": [3], "scheme": "ones", "name": "' + b"a" * 4000 + b'"}'
    with keyed.client() as client:
        declared = client.post("/v1/init", content=big, headers=auth)
        assert declared.status_code == 413
        assert declared.json()["type"] == "urn:initserve:problem:too-large"

        def chunks() -> object:
            for start in range(0, len(big), 500):
                yield big[start : start + 500]

        streamed = client.post("/v1/init", content=chunks(), headers=auth)  # chunked: no Content-Length
        assert streamed.status_code == 413
        small = client.post("/v1/init", content=b'{"shape": [3], "scheme": "ones"}', headers=auth)
        assert small.status_code == 200  # under the limit: served


def test_chunked_body_over_limit_raw_socket(keyed: LiveServer) -> None:
    host, port = keyed.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/init HTTP/1.1\r\nHost: x\r\nX-API-Key: alpha-key\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(5):
                sock.sendall(b"3e8\r\n" + b" " * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed as soon as the limit was crossed
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
