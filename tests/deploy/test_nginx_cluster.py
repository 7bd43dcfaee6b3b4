"""Real nginx (the Debian package), configured from deploy/nginx/initserve.conf.template exactly as the
compose proxy is, in front of two real initserve replicas on loopback ports.

Shows: repeated GETs of a tensor URL come from nginx's disk cache (X-Cache-Status: HIT, and the
replicas' own /metrics count a single fetch); POSTs are spread over both replicas; a replica killed
with SIGKILL in the middle of a run of requests costs no request.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from deploy_helpers import Managed, nginx_binary, start_initserve, start_nginx
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import free_port

pytestmark = [
    pytest.mark.skipif(
        nginx_binary() is None,
        reason="the nginx binary is not installed (.ci/run installs the Debian package: apt-get install nginx)",
    ),
    pytest.mark.timeout(300),
]

TENSOR_ROUTE = "/v1/tensors/{token}"


@dataclass
class Cluster:
    proxy: str
    replicas: list[Managed]
    ports: list[int]
    nginx: Managed
    prefix: Path

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def requests_seen(self, index: int, method: str, route: str, status: str | None = None) -> int:
        """What replica ``index`` itself counted for ``method route`` (Prometheus counter)."""
        text = httpx.get(f"{self.replica_url(index)}/metrics", timeout=5).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "initserve_http_requests_total"
                    and labels.get("method") == method
                    and labels.get("route") == route
                    and (status is None or labels.get("status") == status)
                ):
                    total += sample.value
        return int(total)

    def access_log(self) -> list[dict[str, object]]:
        """nginx's JSON access lines (the template's log_format)."""
        lines = (self.prefix / "logs" / "access.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def _start_cluster(tmp: Path, **settings: str) -> Cluster:
    ports = [free_port(), free_port()]
    replicas: list[Managed] = []
    try:
        for i, port in enumerate(ports):
            replicas.append(start_initserve(port, tmp / f"replica{i}.log", **settings))
        proxy_port = free_port()
        nginx = start_nginx(tmp / "nginx", proxy_port, ports)
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return Cluster(f"http://127.0.0.1:{proxy_port}", replicas, ports, nginx, tmp / "nginx")


def _stop_cluster(cluster: Cluster) -> None:
    cluster.nginx.stop()
    for replica in cluster.replicas:
        replica.stop()
    assert not cluster.nginx.alive() and not any(r.alive() for r in cluster.replicas)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = _start_cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    _stop_cluster(running)


def _spec(seed: int, shape: tuple[int, ...] = (64, 64)) -> dict[str, object]:
    return {"shape": list(shape), "scheme": "kaiming_normal", "seed": seed, "name": "fc.weight"}


def _tensor_url(cluster: Cluster, spec: dict[str, object]) -> str:
    resolved = httpx.post(f"{cluster.proxy}/v1/resolve", json=spec, timeout=10)
    assert resolved.status_code == 200, resolved.text
    url: str = resolved.json()["url"]
    assert url.startswith("/v1/tensors/")
    return url


def _tensor_fetches(cluster: Cluster) -> int:
    """Tensor-URL requests that reached any replica (GET, and HEAD in case nginx passed one on)."""
    return sum(cluster.requests_seen(i, method, TENSOR_ROUTE) for i in range(2) for method in ("GET", "HEAD"))


def test_repeated_tensor_gets_are_served_from_the_nginx_cache(cluster: Cluster) -> None:
    spec = _spec(seed=101)
    expected = httpx.post(f"{cluster.replica_url(0)}/v1/init", json=spec, timeout=30).content
    url = _tensor_url(cluster, spec)
    before = _tensor_fetches(cluster)

    with httpx.Client(base_url=cluster.proxy, timeout=30) as client:
        first = client.get(url)
        assert first.status_code == 200
        assert first.headers["x-cache-status"] == "MISS"
        assert first.content == expected
        etag = first.headers["etag"]

        for _ in range(3):
            again = client.get(url)
            assert again.status_code == 200
            assert again.headers["x-cache-status"] == "HIT"
            assert again.content == expected
            assert again.headers["etag"] == etag

        head = client.head(url)
        assert (head.status_code, head.headers["x-cache-status"]) == (200, "HIT")
        assert int(head.headers["content-length"]) == len(expected)

        ranged = client.get(url, headers={"Range": "bytes=100-1099"})
        assert (ranged.status_code, ranged.headers["x-cache-status"]) == (206, "HIT")
        assert ranged.content == expected[100:1100]
        assert ranged.headers["content-range"] == f"bytes 100-1099/{len(expected)}"

        unchanged = client.get(url, headers={"If-None-Match": etag})
        assert (unchanged.status_code, unchanged.headers["x-cache-status"]) == (304, "HIT")

    # The replicas saw exactly one request for the URL: the miss.
    assert _tensor_fetches(cluster) - before == 1
    hits = [e for e in cluster.access_log() if e["uri"] == url and e["cache"] == "HIT"]
    assert len(hits) == 6 and all(e["upstream"] == "" for e in hits), hits


def test_a_range_on_a_miss_fetches_and_caches_the_full_response(cluster: Cluster) -> None:
    spec = _spec(seed=202, shape=(128, 96))
    expected = httpx.post(f"{cluster.replica_url(1)}/v1/init", json=spec, timeout=30).content
    url = _tensor_url(cluster, spec)
    full_before = sum(cluster.requests_seen(i, "GET", TENSOR_ROUTE, "200") for i in range(2))
    partial_before = sum(cluster.requests_seen(i, "GET", TENSOR_ROUTE, "206") for i in range(2))

    with httpx.Client(base_url=cluster.proxy, timeout=30) as client:
        tail = client.get(url, headers={"Range": f"bytes={len(expected) - 500}-"})
        assert (tail.status_code, tail.headers["x-cache-status"]) == (206, "MISS")
        assert tail.content == expected[-500:]
        whole = client.get(url)
        assert (whole.status_code, whole.headers["x-cache-status"]) == (200, "HIT")
        assert whole.content == expected

    # nginx asked the replica for the whole file once (200, not 206) and served both from it.
    assert sum(cluster.requests_seen(i, "GET", TENSOR_ROUTE, "200") for i in range(2)) - full_before == 1
    assert sum(cluster.requests_seen(i, "GET", TENSOR_ROUTE, "206") for i in range(2)) == partial_before


def test_posts_are_balanced_across_both_replicas(cluster: Cluster) -> None:
    before = [cluster.requests_seen(i, "POST", "/v1/init") for i in range(2)]
    n = 40
    with httpx.Client(base_url=cluster.proxy, timeout=30) as client:
        for seed in range(n):
            response = client.post("/v1/init", json=_spec(seed=1000 + seed, shape=(32, 32)))
            assert response.status_code == 200, response.text
            assert "x-cache-status" not in response.headers  # POSTs bypass the cache
    served = [cluster.requests_seen(i, "POST", "/v1/init") - before[i] for i in range(2)]
    assert sum(served) == n
    assert min(served) >= n // 4, f"unbalanced: {served}"


def test_the_proxy_refuses_oversized_bodies_and_hides_metrics(cluster: Cluster) -> None:
    before = [cluster.requests_seen(i, "POST", "/v1/init") for i in range(2)]
    body = b'{"shape": [1], "scheme": "zeros", "pad": "' + b"x" * (2 << 20) + b'"}'
    response = httpx.post(
        f"{cluster.proxy}/v1/init", content=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 413
    assert [cluster.requests_seen(i, "POST", "/v1/init") for i in range(2)] == before
    assert httpx.get(f"{cluster.proxy}/metrics", timeout=5).status_code == 404
    assert httpx.get(f"{cluster.proxy}/healthz", timeout=5).status_code == 200


@dataclass
class Outcome:
    seed: int
    status: int | None  # None: the body was cut short (the connection broke mid-stream)
    digest: str
    detail: str


def _run_and_stop_a_replica(cluster: Cluster, stop: str, n: int = 240, stop_after: int = 60) -> list[Outcome]:
    """POST ``n`` specs through the proxy from 4 threads; after ``stop_after`` answers, stop replica 0
    with SIGTERM (``stop="term"``: what docker stop / Kubernetes do) or SIGKILL (``"kill"``: a crash)."""
    done = 0
    lock = threading.Lock()
    stopped = threading.Event()
    local = threading.local()
    clients: list[httpx.Client] = []

    def fetch(seed: int) -> Outcome:
        nonlocal done
        if not hasattr(local, "client"):  # one keep-alive connection to the proxy per thread
            local.client = httpx.Client(base_url=cluster.proxy, timeout=30)
            with lock:
                clients.append(local.client)
        try:
            response = local.client.post("/v1/init", json=_spec(seed=seed, shape=(48, 48)))
            outcome = Outcome(
                seed,
                response.status_code,
                hashlib.sha256(response.content).hexdigest(),
                response.text[:200] if response.status_code != 200 else "",
            )
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # The connection broke before Content-Length was reached (EOF or reset): detectably incomplete.
            outcome = Outcome(seed, None, "", f"{type(exc).__name__}: {exc}")
        with lock:
            done += 1
            if done == stop_after:
                replica = cluster.replicas[0]
                if stop == "kill":
                    replica.kill_hard()
                else:
                    os.kill(replica.pid, signal.SIGTERM)
                stopped.set()
        return outcome

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(fetch, range(5000, 5000 + n)))
    for client in clients:
        client.close()
    assert stopped.is_set()
    cluster.replicas[0].popen.wait(timeout=30)
    return results


def _assert_correct(cluster: Cluster, outcomes: list[Outcome]) -> None:
    """Every completed body is the right tensor: the surviving replica's own answer for that spec."""
    with httpx.Client(base_url=cluster.replica_url(1), timeout=30) as direct:
        for outcome in outcomes:
            own = direct.post("/v1/init", json=_spec(seed=outcome.seed, shape=(48, 48)))
            assert hashlib.sha256(own.content).hexdigest() == outcome.digest, outcome.seed


def _assert_failover_happened(cluster: Cluster) -> None:
    log = [e for e in cluster.access_log() if e["uri"] == "/v1/init"]
    dead, alive = f"127.0.0.1:{cluster.ports[0]}", f"127.0.0.1:{cluster.ports[1]}"
    assert any(e["upstream"] == dead and e["status"] == 200 for e in log), "the stopped replica served nothing"
    # nginx met the stopped replica after the stop and retried the request on the survivor.
    retried = [e for e in log if str(e["upstream"]).startswith(dead + ", ")]
    assert retried, "no request was retried on the next upstream"
    assert all(str(e["upstream"]).endswith(alive) and e["status"] == 200 for e in retried), retried


def test_stopping_a_replica_mid_run_loses_no_request(tmp_path: Path) -> None:
    """SIGTERM (graceful: in-flight responses finish) while requests flow: every request succeeds."""
    # Slots to spare: this test is about failover, not saturation (see the test below for that).
    running = _start_cluster(tmp_path, max_concurrent_generations="16")
    try:
        outcomes = _run_and_stop_a_replica(running, stop="term")
        failed = [o for o in outcomes if o.status != 200]
        assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
        _assert_correct(running, outcomes)
        _assert_failover_happened(running)
    finally:
        _stop_cluster(running)


def test_a_crashing_replica_never_surfaces_as_an_error_status(tmp_path: Path) -> None:
    """SIGKILL while requests flow. nginx retries every request whose response had not started, so no
    client ever sees a 502/503/504. A response already streaming when its replica died cannot be
    replayed by any proxy (its first bytes are gone to the client): it ends short of Content-Length,
    detectably, and the same request sent again succeeds, which is what initserve_client does."""
    running = _start_cluster(tmp_path, max_concurrent_generations="16")
    try:
        outcomes = _run_and_stop_a_replica(running, stop="kill")
        assert all(o.status in (200, None) for o in outcomes), [o for o in outcomes if o.status not in (200, None)]
        cut = [o for o in outcomes if o.status is None]
        assert len(cut) <= 4, f"more cut streams than requests in flight at the kill: {cut}"
        with httpx.Client(base_url=running.proxy, timeout=30) as client:
            for outcome in cut:
                again = client.post("/v1/init", json=_spec(seed=outcome.seed, shape=(48, 48)))
                assert again.status_code == 200
                outcome.status, outcome.digest = 200, hashlib.sha256(again.content).hexdigest()
        _assert_correct(running, outcomes)
        _assert_failover_happened(running)
    finally:
        _stop_cluster(running)


def test_saturated_replicas_answer_503_and_stay_in_rotation(tmp_path: Path) -> None:
    """One generation slot per replica and six concurrent clients: the surplus gets the replicas' own
    503 + Retry-After, never nginx's 502 "no live upstreams", and afterwards both replicas still serve."""
    running = _start_cluster(tmp_path, max_concurrent_generations="1")
    try:
        spec = {"shape": [1024, 1024], "scheme": "normal", "name": "big"}

        def fetch(seed: int) -> tuple[int, str | None]:
            response = httpx.post(f"{running.proxy}/v1/init", json={**spec, "seed": seed}, timeout=60)
            return response.status_code, response.headers.get("retry-after")

        with ThreadPoolExecutor(max_workers=6) as pool:
            burst = list(pool.map(fetch, range(36)))
        assert {status for status, _ in burst} <= {200, 503}, burst
        assert any(status == 503 for status, _ in burst), "the burst never saturated the replicas"
        assert all(retry_after is not None for status, retry_after in burst if status == 503)

        before = [running.requests_seen(i, "POST", "/v1/init") for i in range(2)]
        with httpx.Client(base_url=running.proxy, timeout=30) as client:
            for seed in range(10):
                assert client.post("/v1/init", json=_spec(seed=seed)).status_code == 200
        after = [running.requests_seen(i, "POST", "/v1/init") for i in range(2)]
        assert all(a - b >= 3 for a, b in zip(after, before, strict=True)), (before, after)
    finally:
        _stop_cluster(running)
