"""Issue #11 against a real server: no 500 for any input, bounded heads, honest admission, clean exits.

Each test is one of the issue's examples plus other members of its kind. The reliability suite
(tests/api/test_api_reliability.py, ``-m slow``) fuzzes the same kinds at volume.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live_server import LiveServer, start_server

PROBLEM = "application/problem+json"


def token(text: str | bytes, kind: str = "t") -> str:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return f"{kind}." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def assert_names_field(response: httpx.Response, status: int, *field: str | int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    locs = [tuple(error["loc"]) for error in response.json()["errors"]]
    assert any(loc[-len(field) :] == field for loc in locs), locs


# --- 1. scheme arithmetic ------------------------------------------------------------------------
ARITHMETIC = [
    ({"shape": [4, 4], "scheme": "kaiming_uniform", "params": {"a": 1e200}}, "a"),
    ({"shape": [4, 4], "scheme": "kaiming_normal", "params": {"a": -1e300}}, "a"),
    ({"shape": [4, 4], "scheme": "xavier_normal", "params": {"gain": 0}}, "gain"),
    ({"shape": [4, 4], "scheme": "xavier_uniform", "params": {"fan_in": 1e308, "fan_out": 1e308}}, "fan_in"),
    ({"shape": [4, 4], "scheme": "xavier_uniform", "params": {"gain": -1}}, "gain"),
    ({"shape": [1], "scheme": "uniform", "dtype": "float64", "params": {"low": -9e307, "high": 9e307}}, "low"),
    ({"shape": [4], "scheme": "truncated_normal", "params": {"mean": 1e308, "std": 1e308}}, "mean"),
    ({"shape": [4, 4], "scheme": "sparse", "params": {"sparsity": 0.5, "std": 1e308}}, "std"),
    ({"shape": [8, 4, 3], "scheme": "delta_orthogonal", "params": {"gain": 1e300}}, "gain"),
]


@pytest.mark.parametrize(("spec", "field"), ARITHMETIC)
@pytest.mark.parametrize("stats", [False, True])
def test_derived_scalars_out_of_range_are_422_naming_the_param(
    http: httpx.Client, spec: dict[str, Any], field: str, stats: bool
) -> None:
    response = http.post("/v1/init" + ("?format=stats" if stats else ""), json=spec)
    assert_names_field(response, 422, "params", field)
    again = http.get("/v1/tensors/" + token(json.dumps(spec)))
    assert_names_field(again, 422, "params", field)


def test_an_integer_beyond_float_range_is_422(http: httpx.Client) -> None:
    body = '{"shape":[4],"scheme":"normal","params":{"mean":1' + "0" * 400 + "}}"
    response = http.post("/v1/init", content=body, headers={"content-type": "application/json"})
    assert_names_field(response, 422, "params", "mean")


def test_stats_figures_beyond_float64_are_null(http: httpx.Client) -> None:
    # Values past 2^400 are accumulated in units of a power of two: their std is a finite figure...
    spec = {"shape": [2000], "scheme": "normal", "dtype": "float64", "params": {"std": 1e306}}
    stats = http.post("/v1/init?format=stats", json=spec)
    assert stats.status_code == 200, stats.text
    body = stats.json()  # strict JSON: no NaN/Infinity literals
    assert 0.9e306 < body["std"] < 1.1e306
    assert body["min"] < 0 < body["max"]
    # ...while a figure that itself exceeds float64 (gain² = 1e600 on the Gram's diagonal) is null.
    spec = {"shape": [8, 8], "scheme": "orthogonal", "dtype": "float64", "params": {"gain": 1e300}}
    stats = http.post("/v1/init?format=stats", json=spec)
    assert stats.status_code == 200, stats.text
    orthogonality = stats.json()["orthogonality"]
    assert orthogonality["expected_diagonal"] is None and orthogonality["max_abs_deviation"] is None


# --- 2. tokens -----------------------------------------------------------------------------------
def test_token_with_a_huge_integer_is_400(http: httpx.Client) -> None:
    text = '{"shape":[4],"scheme":"normal","params":{"mean":' + "1" * 5000 + "}}"
    response = http.get("/v1/tensors/" + token(text))
    assert_names_field(response, 400, "path", "token")


@pytest.mark.parametrize("where", ["key", "value", "name", "scheme"])
def test_lone_surrogates_are_named_not_crashed_on(http: httpx.Client, where: str) -> None:
    spec: dict[str, Any] = {"shape": [4], "scheme": "normal"}
    if where == "key":
        spec["params"] = {"\ud800": 1}
    elif where == "value":
        spec["params"] = {"std": "\udfff"}
    else:
        spec[where] = "x\ud800"
    text = json.dumps(spec)  # escapes the surrogate as \ud800: valid JSON
    for response in (
        http.get("/v1/tensors/" + token(text)),
        http.post("/v1/init", content=text, headers={"content-type": "application/json"}),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["errors"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300), kind=st.sampled_from(["t", "b"]))
def test_any_token_bytes_are_answered_without_a_500(http: httpx.Client, payload: bytes, kind: str) -> None:
    response = http.get("/v1/tensors/" + token(payload, kind))
    assert response.status_code in (200, 400, 413, 422), response.text
    if response.status_code != 200:
        assert response.json()["errors"]


# --- 10. parse errors, 500s ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"shape": [4], "scheme": "normal", "name": "\xff\xfe"}', {}),
        (b"[" * 100_000, {}),
        (b'{"shape": [4], "scheme": "normal", "seed": ' + b"9" * 5000 + b"}", {}),
        (b'{"shape": [4], "scheme": "normal"', {}),
    ],
    ids=["invalid-utf8", "deep-nesting", "huge-integer", "truncated"],
)
def test_body_parse_errors_are_malformed_json_with_loc(
    http: httpx.Client, body: bytes, headers: dict[str, str]
) -> None:
    response = http.post("/v1/init", content=body, headers={"content-type": "application/json", **headers})
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "urn:initserve:problem:malformed-json"
    assert problem["errors"][0]["loc"][0] == "body"


PLAIN_SPEC = b'{"shape": [4], "scheme": "normal", "name": "coded"}'
BODY_PATHS = ["/v1/init", "/v1/init?format=stats", "/v1/bundle", "/v1/resolve", "/v1/derive", "/v1/diagnose"]


@pytest.mark.parametrize("path", [*BODY_PATHS, "/v1/checkpoints"])
@pytest.mark.parametrize(
    ("body", "coding"),
    [
        (gzip.compress(PLAIN_SPEC), "gzip"),
        (PLAIN_SPEC, "gzip"),  # a plain body labelled gzip was served as if unlabelled
        (PLAIN_SPEC, "br"),
        (PLAIN_SPEC, "GZIP"),
        (PLAIN_SPEC, "identity, deflate"),
    ],
    ids=["gzip-body", "gzip-label-plain-body", "br", "upper-case", "identity-then-deflate"],
)
def test_a_body_with_a_content_coding_is_415_naming_the_header(
    live: LiveServer, path: str, body: bytes, coding: str
) -> None:
    # Its own connection each time: the refusal closes the connection (the body stays unread).
    headers = {"content-type": "application/json", "content-encoding": coding}
    response = httpx.post(live.url + path, content=body, headers=headers, timeout=30)
    assert_names_field(response, 415, "header", "content-encoding")
    assert response.json()["type"] == "urn:initserve:problem:unsupported-media-type"
    assert response.headers["accept-encoding"] == "identity"
    assert coding.split(",")[-1].strip().lower() in response.json()["detail"]


def test_a_remembered_request_labelled_gzip_is_refused_not_replayed(live: LiveServer) -> None:
    headers = {"content-type": "application/json"}
    for _ in range(2):  # the second is answered from the repeat memo
        assert httpx.post(live.url + "/v1/init", content=PLAIN_SPEC, headers=headers).status_code == 200
    labelled = httpx.post(live.url + "/v1/init", content=PLAIN_SPEC, headers={**headers, "content-encoding": "gzip"})
    assert_names_field(labelled, 415, "header", "content-encoding")


@pytest.mark.parametrize("coding", ["identity", "Identity", ""])
def test_the_identity_coding_is_a_plain_body(http: httpx.Client, coding: str) -> None:
    headers = {"content-type": "application/json", "content-encoding": coding}
    response = http.post("/v1/init", content=PLAIN_SPEC, headers=headers)
    assert response.status_code == 200, response.text
    assert response.content == http.post("/v1/init", content=PLAIN_SPEC, headers=headers).content


def test_a_500_carries_the_request_id_and_logs_bytes_sent(caplog: pytest.LogCaptureFixture) -> None:
    # A bug can only be provoked in-process: a route that raises, added to the real app.
    from initserve.api.app import create_app
    from initserve.api.settings import Settings
    from starlette.testclient import TestClient

    app = create_app(Settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level("INFO", "initserve"):
        response = client.get("/boom", headers={"X-Request-ID": "trace-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-500"
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "trace-500" in response.json()["detail"] and "a bug" not in response.text
    access = [r for r in caplog.records if r.name == "initserve.access"]
    assert access and access[-1].status == 500 and access[-1].bytes_sent == len(response.content)  # type: ignore[attr-defined]


# --- 6. request heads ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(header_timeout="1", max_concurrent_generations="2")


def raw_exchange(server: LiveServer, request: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def status_and_problem(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1024)) + b"\r\n", 431),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4096) for i in range(64)),
            431,
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * (8 << 20) + b"\r\n\r\n", 431),
        (b"GET /v1/tensors/t." + b"A" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHo\x00st: x\r\n\r\n", 400),
    ],
    ids=["1024-headers", "256-KiB-of-headers", "one-8-MiB-header", "70-KB-url", "not-http"],
)
def test_oversized_or_broken_heads_get_a_problem_and_memory_stays_flat(
    guarded: LiveServer, request_bytes: bytes, status: int
) -> None:
    before = rss_mib(guarded.pid)
    answer = raw_exchange(guarded, request_bytes)
    got, problem = status_and_problem(answer)
    assert got == status and problem["status"] == status and problem["errors"]
    assert rss_mib(guarded.pid) - before < 32
    assert httpx.get(guarded.url + "/healthz").status_code == 200


def test_incomplete_and_silent_heads_are_timed_out(guarded: LiveServer) -> None:
    started = time.monotonic()
    partial = raw_exchange(guarded, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = raw_exchange(guarded, b"")
    assert time.monotonic() - started < 6  # 1 s each, plus slack on a loaded machine
    for answer in (partial, silent):
        assert status_and_problem(answer)[0] == 408


def test_a_trickled_body_is_timed_out(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(body_timeout="1")
    body = b'{"shape": [4], "scheme": "normal"}'
    started = time.monotonic()
    answer = raw_exchange(
        server,
        b"POST /v1/init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body[:10]),
    )
    status, problem = status_and_problem(answer)
    assert status == 408 and problem["type"].endswith("request-timeout")
    assert time.monotonic() - started < 6


def test_slowloris_sockets_do_not_block_other_clients(guarded: LiveServer) -> None:
    sockets = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", guarded.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        assert httpx.get(guarded.url + "/healthz", timeout=5).status_code == 200
        time.sleep(2.5)  # past the head timeout: every one of them has been answered 408 and closed
        closed = 0
        for sock in sockets:
            sock.settimeout(1)
            data = sock.recv(65536)
            closed += data.startswith(b"HTTP/1.1 408")
        assert closed == len(sockets)
    finally:
        for sock in sockets:
            sock.close()


# --- 4. whole-tensor schemes: one computation per request -----------------------------------------
def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_many_ranges_of_an_orthogonal_tensor_cost_one_qr(guarded: LiveServer) -> None:
    spec = {"shape": [600, 600], "scheme": "orthogonal", "seed": 3, "dtype": "float64"}  # 2.7 MiB: streamed
    with httpx.Client(base_url=guarded.url, timeout=120) as client:
        url = client.post("/v1/resolve", json=spec).json()["url"]
        whole = client.get(url).content
        ranges = [(i * 170_000 + 100, i * 170_000 + 4_195) for i in range(16)]
        header = "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)
        singles = []
        for _ in range(3):
            before = cpu_seconds(guarded.pid)
            client.get(url, headers={"Range": "bytes=100000-103999"})  # in the data: one QR
            singles.append(cpu_seconds(guarded.pid) - before)
        one = sorted(singles)[1]
        before = cpu_seconds(guarded.pid)
        response = client.get(url, headers={"Range": header})
        sixteen = cpu_seconds(guarded.pid) - before
    assert response.status_code == 206
    boundary = response.headers["content-type"].split("boundary=")[1].encode()
    parts = [part for part in response.content.split(b"--" + boundary) if b"\r\n\r\n" in part]
    bodies = [part.split(b"\r\n\r\n", 1)[1][:-2] for part in parts]
    assert bodies == [whole[a : b + 1] for a, b in ranges]
    assert sixteen < 4 * one + 0.5, (one, sixteen)  # one QR per range (the old way) is 16x


# --- 5. stats: cancellable, chunked, admission honest --------------------------------------------
BIG_STATS = {"shape": [1 << 27], "scheme": "normal", "name": "big-stats"}


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def in_flight(server: LiveServer) -> int:
    return int(httpx.get(server.url + "/readyz").json()["generations_in_flight"])


def test_abandoned_stats_free_their_slots(guarded: LiveServer) -> None:
    for seed in range(2):
        with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
            body = json.dumps({**BIG_STATS, "seed": seed}).encode()
            sock.sendall(
                b"POST /v1/init?format=stats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert wait_for(lambda: in_flight(guarded) >= 1, 10)
    # both sockets are closed: the runs stop at their next chunk and give their slots back
    assert wait_for(lambda: in_flight(guarded) == 0, 5), in_flight(guarded)


def test_a_small_request_is_served_promptly_beside_big_stats(guarded: LiveServer) -> None:
    done: list[httpx.Response] = []

    def big(seed: int) -> None:
        with httpx.Client(base_url=guarded.url, timeout=120) as client:
            done.append(client.post("/v1/init?format=stats", json={**BIG_STATS, "seed": 100 + seed}))

    threads = [threading.Thread(target=big, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: in_flight(guarded) == 2, 10)
        started = time.monotonic()
        small = httpx.post(guarded.url + "/v1/init", json={"shape": [4096], "scheme": "normal", "seed": 9}, timeout=60)
        elapsed = time.monotonic() - started
        # every slot is taken: an honest immediate 503, or (cached) a prompt answer — never a long wait
        assert small.status_code in (200, 503)
        if small.status_code == 503:
            assert small.headers["retry-after"]
        assert elapsed < 2.0, elapsed
    finally:
        for thread in threads:
            thread.join()
    assert [r.status_code for r in done] == [200, 200]


def test_an_admitted_request_beside_one_big_stats_run_is_prompt(guarded: LiveServer) -> None:
    done: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: done.append(httpx.post(guarded.url + "/v1/init?format=stats", json=BIG_STATS, timeout=120))
    )
    thread.start()
    try:
        assert wait_for(lambda: in_flight(guarded) == 1, 10)
        started = time.monotonic()
        small = httpx.post(guarded.url + "/v1/init", json={"shape": [4096], "scheme": "normal", "seed": 10}, timeout=60)
        assert small.status_code == 200
        assert time.monotonic() - started < 2.0
    finally:
        thread.join()
    assert done[0].status_code == 200


# --- 7. SIGTERM with a stalled client ------------------------------------------------------------
@pytest.fixture
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("sigterm"), {"INITSERVE_GRACEFUL_SHUTDOWN_TIMEOUT": "2"})
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_sigterm_with_a_stalled_stream_exits_within_the_graceful_timeout(fresh_server: LiveServer) -> None:
    sock = socket.create_connection(("127.0.0.1", fresh_server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"shape": [1 << 28], "scheme": "uniform"}).encode()
    sock.sendall(
        b"POST /v1/init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # then read nothing more: the stream stalls
    try:
        time.sleep(0.5)
        started = time.monotonic()
        fresh_server.process.send_signal(signal.SIGTERM)
        try:
            fresh_server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit within 15 s of SIGTERM with a stalled stream")
        assert time.monotonic() - started < 2 + 5
    finally:
        sock.close()


# --- error lists are bounded -------------------------------------------------------------------------
# A body within the size limit can break tens of thousands of rules (60,000 unknown keys in 1 MiB were
# answered with 5 MiB of errors): the problem lists the first 50 and counts the rest in its detail.
@pytest.mark.parametrize(
    ("path", "body", "total"),
    [
        ("/v1/init", {"shape": [2], "scheme": "normal", "name": "w", **{f"k{i}": i for i in range(20_000)}}, 20_000),
        ("/v1/resolve", {"shape": [2], "scheme": "normal", **{f"k{i}": i for i in range(20_000)}}, 20_000),
        ("/v1/bundle", {"tensors": {f"t{i}": {"shape": [-1], "scheme": "zeros"} for i in range(3000)}}, 3000),
        ("/v1/bundle", {"tensors": {f"t{i}": {"shape": [2], "scheme": "nope"} for i in range(3000)}}, 3000),
    ],
    ids=["init-unknown-keys", "resolve-unknown-keys", "bundle-bad-shapes", "bundle-bad-schemes"],
)
def test_a_problem_lists_at_most_50_errors_and_counts_the_rest(
    http: httpx.Client, path: str, body: dict[str, Any], total: int
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 422, response.text[:300]
    problem = response.json()
    assert len(problem["errors"]) == 50
    assert all(error["msg"] and error["loc"][0] == "body" for error in problem["errors"])
    assert f"({total:,} errors; the first 50 are listed)" in problem["detail"]
    assert len(response.content) < 64_000  # 50 messages of at most ~600 characters: bounded, whatever the count


def test_a_shown_value_is_cut_without_encoding_all_of_it() -> None:
    from initserve.api.problems import describe_validation_error

    huge = {f"k{i}": list(range(10)) for i in range(100_000)}
    calls = 0

    class Counting(dict[str, Any]):
        def items(self) -> Any:  # the encoder walks the mapping through items()
            nonlocal calls
            calls += 1
            return super().items()

    _, msg = describe_validation_error({"loc": ("body", "params"), "type": "dict_type", "input": Counting(huge)})
    assert msg.startswith('params must be an object, got {"k0": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "k1": ')
    assert msg.endswith("...") and len(msg) < 120
    assert calls == 1  # one lazy walk for the one rule shown, not one full encoding per rule
