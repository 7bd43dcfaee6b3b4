"""Whole-tensor results are computed once: kept within a byte budget, shared by concurrent
requests, by every range of a multi-range request, by slices and by stats; counted in /metrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from initserve.api.whole_cache import WholeResultCache
from initserve.engine import Kernel, Spec, default_kernel, generate, parse_spec
from initserve.engine.generate import Array, compute_whole

from tests.api.test_api_cache import metric
from tests.live_server import LiveServer


def _spec(seed: int, shape: tuple[int, int] = (40, 30)) -> Spec:
    return parse_spec({"shape": list(shape), "scheme": "orthogonal", "seed": seed, "dtype": "float64"})


class _Counting:
    """compute_whole that counts its calls and can be held until released."""

    def __init__(self, hold: bool = False, fail_first: bool = False) -> None:
        self.calls = 0
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, spec: Spec, kernel: Kernel) -> Array:
        with self.lock:
            self.calls += 1
            fail = self.fail_first and self.calls == 1
        self.release.wait(10)
        if fail:
            raise RuntimeError("boom")
        return compute_whole(spec, kernel)


def get(cache: WholeResultCache, spec: Spec) -> Array:
    return cache.get(spec, default_kernel())


def _counters(cache: WholeResultCache) -> dict[str, int]:
    counts = {"hit": 0, "miss": 0, "evict": 0}

    def bump(name: str) -> Callable[[], None]:
        def inc() -> None:
            counts[name] += 1

        return inc

    cache.on_hit, cache.on_miss, cache.on_evict = bump("hit"), bump("miss"), bump("evict")
    return counts


def test_kept_results_are_the_engine_s_read_only_and_reused() -> None:
    compute = _Counting()
    cache = WholeResultCache(1 << 20, compute)
    counts = _counters(cache)
    first = get(cache, _spec(1))
    assert first.tobytes() == generate(_spec(1)).tobytes()
    assert not first.flags.writeable
    assert get(cache, _spec(1)) is first
    # the slice is ignored: a slice of a tensor reuses the tensor
    sliced = parse_spec({"shape": [40, 30], "scheme": "orthogonal", "seed": 1, "dtype": "float64", "slice": [[2, 5]]})
    assert get(cache, sliced) is first
    assert compute.calls == 1 and counts == {"hit": 2, "miss": 1, "evict": 0}
    # another algorithm is another result
    get(cache, parse_spec({"shape": [40, 30], "scheme": "orthogonal", "seed": 1, "dtype": "float64", "algorithm": 1}))
    assert compute.calls == 2


def test_budget_bounds_the_kept_bytes_least_recently_used_first() -> None:
    size = 40 * 30 * 8
    cache = WholeResultCache(2 * size + size // 2, _Counting())
    counts = _counters(cache)
    for seed in (1, 2, 3):
        get(cache, _spec(seed))
        assert cache.stored_bytes <= cache.budget_bytes
    assert len(cache) == 2 and counts["evict"] == 1
    get(cache, _spec(3))
    assert counts["hit"] == 1
    get(cache, _spec(1))  # evicted: computed again
    assert counts["miss"] == 4
    # larger than the budget: computed and returned, never kept; budget 0 keeps nothing
    tiny = WholeResultCache(size - 1, _Counting())
    assert get(tiny, _spec(1)).nbytes == size and len(tiny) == 0
    off = WholeResultCache(0, _Counting())
    get(off, _spec(1))
    get(off, _spec(1))
    assert len(off) == 0


def test_concurrent_identical_requests_share_one_computation() -> None:
    compute = _Counting(hold=True)
    cache = WholeResultCache(1 << 20, compute)
    counts = _counters(cache)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(get, cache, _spec(7)) for _ in range(6)]
        while compute.calls == 0:
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)  # the other five are waiting, not computing
        compute.release.set()
        results = [future.result() for future in futures]
    assert compute.calls == 1
    assert all(result is results[0] for result in results)
    assert counts == {"hit": 5, "miss": 1, "evict": 0}


def test_a_failed_computation_is_retried_by_a_waiter() -> None:
    compute = _Counting(hold=True, fail_first=True)
    cache = WholeResultCache(1 << 20, compute)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(get, cache, _spec(9))
        while compute.calls == 0:
            threading.Event().wait(0.01)
        second = pool.submit(get, cache, _spec(9))
        threading.Event().wait(0.1)
        compute.release.set()
        with pytest.raises(RuntimeError, match="boom"):
            first.result()
        assert second.result().tobytes() == generate(_spec(9)).tobytes()
    assert compute.calls == 2


# --- a real server: files above the response-cache entry size stream, so only this cache helps ---
@pytest.fixture(scope="module")
def streaming(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(response_cache_entry_bytes="4096")


def _counts(server: LiveServer) -> tuple[float, float]:
    return metric(server, "initserve_whole_cache_hits_total"), metric(server, "initserve_whole_cache_misses_total")


def test_ranges_slices_stats_and_concurrent_requests_reuse_one_computation(streaming: LiveServer) -> None:
    body = {"shape": [96, 64], "scheme": "orthogonal", "seed": 11}
    with streaming.client() as http:
        hits, misses = _counts(streaming)
        whole = http.post("/v1/init", json=body)
        assert whole.status_code == 200
        assert _counts(streaming) == (hits, misses + 1)
        url = whole.headers["content-location"]
        ranges = http.get(url, headers={"Range": "bytes=1000-1099,5000-5999,20000-20099"})
        assert ranges.status_code == 206 and ranges.headers["content-type"].startswith("multipart/byteranges")
        for piece in (whole.content[1000:1100], whole.content[5000:6000], whole.content[20000:20100]):
            assert piece in ranges.content
        # no new computation: the ranges are cut from the kept result (read in one pass or one lookup each)
        after_ranges = _counts(streaming)
        assert after_ranges[1] == misses + 1 and hits + 1 <= after_ranges[0] <= hits + 3
        part = http.post("/v1/init", json={**body, "slice": [[10, 60]]})
        assert part.status_code == 200
        stats = http.post("/v1/init?format=stats", json=body).json()
        assert stats["orthogonality"]["max_abs_deviation"] < 1e-5
        assert _counts(streaming) == (after_ranges[0] + 2, misses + 1)
        expected = np.asarray(generate(parse_spec({**body, "slice": [[10, 60]]})))
        assert part.content.endswith(expected.tobytes())

    fresh = {**body, "seed": 12}

    def fetch(_: int) -> bytes:
        with streaming.client() as client:
            response = client.post("/v1/init", json=fresh)
            assert response.status_code == 200
            return response.content

    hits, misses = _counts(streaming)
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(fetch, range(4)))
    assert len(set(bodies)) == 1
    assert _counts(streaming) == (hits + 3, misses + 1)
