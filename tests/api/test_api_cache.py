"""The response cache of small files: the LRU itself, then real servers with it on, tight and off."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest
from fastapi import Request
from fastapi.security import APIKeyHeader, HTTPBearer
from initserve.api.app import create_app
from initserve.api.repeats import Answer, RepeatMemo
from initserve.api.response_cache import CacheKey, ResponseCache
from initserve.api.security import presented_key
from initserve.api.settings import Settings
from initserve.engine import SafetensorsFile, parse_spec
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import LiveServer

SMALL = {"shape": [256, 256], "scheme": "kaiming_normal", "seed": 0}
SMALL_XAVIER = {"shape": [128, 64], "scheme": "xavier_normal", "seed": 77}
TIGHT_BUDGET = 50_000  # three 16 KB files fit, the fourth evicts
TIGHT_ENTRY = 20_000


def key(name: str) -> CacheKey:
    return ("t", name, 1, "safetensors")


# --- the LRU --------------------------------------------------------------------------------------
def test_lru_evicts_least_recently_used_within_the_budget() -> None:
    evicted: list[int] = []
    cache = ResponseCache(budget_bytes=100, entry_bytes=60)
    cache.on_evict = evicted.append
    assert cache.put(key("a"), b"a" * 40) and cache.put(key("b"), b"b" * 40)
    assert cache.get(key("a")) == b"a" * 40  # a is now the most recently used
    assert cache.put(key("c"), b"c" * 40)  # 120 > 100: b goes, not a
    assert cache.get(key("b")) is None and cache.get(key("a")) is not None and cache.get(key("c")) is not None
    assert cache.stored_bytes == 80 and len(cache) == 2 and evicted == [1]
    assert cache.put(key("d"), b"d" * 60)  # 140 > 100: a (least recent after c was read) goes
    assert cache.get(key("a")) is None and cache.stored_bytes == 100 and len(cache) == 2
    assert not cache.put(key("e"), b"e" * 61), "over the per-entry cap"
    assert cache.get(key("e")) is None and cache.stored_bytes == 100


def test_replacing_an_entry_counts_its_size_once() -> None:
    cache = ResponseCache(budget_bytes=100, entry_bytes=100)
    cache.put(key("a"), b"x" * 30)
    cache.put(key("a"), b"y" * 50)
    assert cache.stored_bytes == 50 and cache.get(key("a")) == b"y" * 50


@pytest.mark.parametrize(("budget", "entry"), [(0, 1 << 20), (1 << 20, 0)])
def test_zero_budget_or_cap_keeps_nothing(budget: int, entry: int) -> None:
    cache = ResponseCache(budget_bytes=budget, entry_bytes=entry)
    assert not cache.enabled and not cache.put(key("a"), b"a")
    assert cache.get(key("a")) is None and cache.stored_bytes == 0


def test_stored_bytes_never_exceed_the_budget_under_random_traffic() -> None:
    rng = random.Random(7)
    cache = ResponseCache(budget_bytes=1000, entry_bytes=300)
    for _ in range(2000):
        name = f"k{rng.randrange(40)}"
        if rng.random() < 0.5:
            cache.put(key(name), bytes(rng.randrange(1, 400)))
        else:
            cache.get(key(name))
        assert cache.stored_bytes <= 1000
        assert cache.stored_bytes == sum(len(cache.get(k) or b"") for k in list(cache._entries))


def test_single_flight_shares_the_owner_result_even_when_not_kept() -> None:
    async def scenario() -> None:
        cache = ResponseCache(budget_bytes=0, entry_bytes=0)  # nothing kept, results still shared
        first, owner = cache.claim(key("a"))
        second, other = cache.claim(key("a"))
        assert owner and not other and second is first
        results: list[bytes | None] = []
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                results.append(await second.wait())

            group.start_soon(wait)
            group.start_soon(wait)
            await anyio.sleep(0.01)
            cache.finish(key("a"), first, b"payload")
        assert results == [b"payload", b"payload"]
        assert cache.get(key("a")) is None
        again, owner_again = cache.claim(key("a"))
        assert owner_again and again is not first, "a finished generation is no longer joinable"
        cache.finish(key("a"), again, None)
        assert await again.wait() is None

    anyio.run(scenario)


# --- real servers ---------------------------------------------------------------------------------
def metric(server: LiveServer, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def cache_counts(server: LiveServer) -> tuple[float, float]:
    hits = metric(server, "initserve_response_cache_hits_total")
    return hits, metric(server, "initserve_response_cache_misses_total")


@pytest.fixture(scope="module")
def uncached(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(response_cache_bytes="0")


@pytest.fixture(scope="module")
def tight(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(response_cache_bytes=str(TIGHT_BUDGET), response_cache_entry_bytes=str(TIGHT_ENTRY))


def test_hits_return_the_bytes_a_fresh_uncached_server_generates(live: LiveServer, uncached: LiveServer) -> None:
    spec = {**SMALL, "seed": 1234}
    expected = SafetensorsFile(parse_spec(spec)).to_bytes()
    hits, misses = cache_counts(live)
    with live.client() as client:
        first = client.post("/v1/init", json=spec)
        second = client.post("/v1/init", json=spec)
        by_url = client.get(second.headers["content-location"])
        ranged = client.get(second.headers["content-location"], headers={"Range": "bytes=100-199,-50"})
    assert cache_counts(live) == (hits + 3, misses + 1)
    with uncached.client() as client:
        fresh = client.post("/v1/init", json=spec)
    assert first.content == second.content == by_url.content == fresh.content == expected
    assert second.headers["etag"] == fresh.headers["etag"] == by_url.headers["etag"]
    assert second.headers["content-location"] == fresh.headers["content-location"]
    assert second.headers["content-length"] == str(len(expected))
    assert ranged.status_code == 206 and ranged.headers["content-type"].startswith("multipart/byteranges")
    assert expected[100:200] in ranged.content and ranged.content.count(expected[-50:]) == 1
    assert int(ranged.headers["content-length"]) == len(ranged.content)
    assert metric(live, "initserve_response_cache_bytes") >= len(expected)


def test_a_cache_of_zero_bytes_generates_every_time(uncached: LiveServer) -> None:
    spec = {**SMALL, "seed": 99}
    hits, misses = cache_counts(uncached)
    with uncached.client() as client:
        bodies = {client.post("/v1/init", json=spec).content for _ in range(3)}
    assert len(bodies) == 1
    assert cache_counts(uncached) == (hits, misses + 3)
    assert metric(uncached, "initserve_response_cache_bytes") == 0
    assert metric(uncached, "initserve_response_cache_entries") == 0


def test_eviction_keeps_the_budget_and_drops_the_least_recent(tight: LiveServer) -> None:
    specs = [{"shape": [4000], "scheme": "uniform", "seed": seed} for seed in range(5)]  # ≈16.2 KB files
    with tight.client() as client:
        bodies = [client.post("/v1/init", json=spec).content for spec in specs]
        assert all(TIGHT_BUDGET // 4 < len(body) <= TIGHT_ENTRY for body in bodies)
        assert metric(tight, "initserve_response_cache_bytes") <= TIGHT_BUDGET
        assert metric(tight, "initserve_response_cache_entries") == 3
        assert metric(tight, "initserve_response_cache_evictions_total") == 2
        hits, misses = cache_counts(tight)
        assert client.post("/v1/init", json=specs[4]).content == bodies[4]  # most recent: kept
        assert cache_counts(tight) == (hits + 1, misses)
        assert client.post("/v1/init", json=specs[0]).content == bodies[0]  # oldest: evicted, made again
        assert cache_counts(tight) == (hits + 1, misses + 1)
    assert metric(tight, "initserve_response_cache_bytes") <= TIGHT_BUDGET


def test_files_over_the_entry_cap_stream_and_are_never_cached(tight: LiveServer) -> None:
    spec = {"shape": [64, 1024], "scheme": "normal", "seed": 3}  # 256 KiB > the 20 KB cap
    before = cache_counts(tight), metric(tight, "initserve_response_cache_bytes")
    with tight.client() as client:
        first, second = (client.post("/v1/init", json=spec) for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == SafetensorsFile(parse_spec(spec)).to_bytes()
    assert (cache_counts(tight), metric(tight, "initserve_response_cache_bytes")) == before


def test_concurrent_identical_requests_generate_once(live: LiveServer) -> None:
    spec = {**SMALL, "shape": [512, 512], "seed": 4242}
    hits, misses = cache_counts(live)

    def fetch(_: int) -> tuple[int, str]:
        response = httpx.post(live.url + "/v1/init", json=spec, timeout=60)
        return response.status_code, hashlib.sha256(response.content).hexdigest()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(fetch, range(16)))
    expected = hashlib.sha256(SafetensorsFile(parse_spec(spec)).to_bytes()).hexdigest()
    assert results == [(200, expected)] * 16
    assert cache_counts(live) == (hits + 15, misses + 1)


# --- exact repeats answered before routing -------------------------------------------------------
def requests_counted(server: LiveServer, route: str, status: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            wanted = (labels.get("route"), labels.get("method"), labels.get("status")) == (route, "POST", status)
            if sample.name == "initserve_http_requests_total" and wanted:
                return float(sample.value)
    return 0.0


def comparable(response: httpx.Response) -> dict[str, str]:
    """The response headers that must not differ between the full path and a repeat."""
    return {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}


def test_a_repeat_is_the_same_response_counted_and_logged_like_the_first(live: LiveServer) -> None:
    body = b'{"shape": [128, 64], "scheme": "xavier_normal", "seed": 77}'
    headers = {"Content-Type": "application/json"}
    before = requests_counted(live, "/v1/init", "200")
    hits, misses = cache_counts(live)
    with live.client() as client:
        first, second, third = (client.post("/v1/init", content=body, headers=headers) for _ in range(3))
    assert first.status_code == second.status_code == third.status_code == 200
    assert first.content == second.content == third.content == SafetensorsFile(parse_spec(SMALL_XAVIER)).to_bytes()
    assert comparable(first) == comparable(second) == comparable(third)
    assert len({first.headers["x-request-id"], second.headers["x-request-id"], third.headers["x-request-id"]}) == 3
    assert requests_counted(live, "/v1/init", "200") == before + 3
    assert cache_counts(live) == (hits + 2, misses + 1)
    access = [line for line in live.log_text().splitlines() if third.headers["x-request-id"] in line]
    assert len(access) == 1 and first.headers["etag"].strip('"') in access[0]


def test_a_repeat_with_other_negotiation_or_conditions_takes_the_full_path(live: LiveServer) -> None:
    spec = {"shape": [32, 32], "scheme": "uniform", "seed": 8}
    with live.client() as client:
        file = client.post("/v1/init", json=spec)
        again = client.post("/v1/init", json=spec)
        as_json = client.post("/v1/init", json=spec, headers={"Accept": "application/json"})
        by_query = client.post("/v1/init", json=spec, params={"format": "stats"})
        url = file.headers["content-location"]
        whole = client.get(url)
        whole_again = client.get(url)
        not_modified = client.get(url, headers={"If-None-Match": file.headers["etag"]})
        ranged = client.get(url, headers={"Range": "bytes=0-9"})
        invalid = client.post("/v1/init", json={**spec, "scheme": "nope"})
        invalid_again = client.post("/v1/init", json={**spec, "scheme": "nope"})
    assert file.content == again.content == whole.content == whole_again.content
    assert as_json.headers["content-type"] == by_query.headers["content-type"] == "application/json"
    assert as_json.json()["numel"] == 32 * 32
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert ranged.status_code == 206 and ranged.content == file.content[:10]
    assert invalid.status_code == invalid_again.status_code == 422


@pytest.fixture(scope="module")
def keyed_cache(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory(api_keys="right-key")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"X-API-Key": "wrong-key"},
        {"Authorization": "Basic right-key"},
        {"Authorization": "Bearer"},
    ],
)
def test_a_remembered_request_still_needs_a_valid_key(keyed_cache: LiveServer, headers: dict[str, str]) -> None:
    spec = {"shape": [16, 16], "scheme": "normal", "seed": 1}
    with keyed_cache.client() as client:
        good = [
            client.post("/v1/init", json=spec, headers={"Authorization": "Bearer right-key"}),
            client.post("/v1/init", json=spec, headers={"authorization": "bearer  right-key"}),
            client.post("/v1/init", json=spec, headers={"X-API-Key": "right-key"}),
        ]
        refused = client.post("/v1/init", json=spec, headers=headers)
    assert [response.status_code for response in good] == [200, 200, 200]
    assert good[0].content == good[1].content == good[2].content
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer k1", None, "k1"),
        ("bearer   k1  ", None, "k1"),
        ("Basic k1", "k2", "k2"),
        ("Bearer", "k2", "k2"),
        ("Bearer ", None, None),
        (None, "", None),
        (None, None, None),
    ],
)
def test_presented_key_reads_headers_as_the_fastapi_dependencies_do(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    async def fastapi_reading() -> str | None:
        raw = [(b"authorization", authorization.encode())] if authorization is not None else []
        raw += [(b"x-api-key", x_api_key.encode())] if x_api_key is not None else []
        request = Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})
        bearer = await HTTPBearer(auto_error=False)(request)
        header = await APIKeyHeader(name="X-API-Key", auto_error=False)(request)
        return bearer.credentials if bearer is not None else header

    assert presented_key(authorization, x_api_key) == expected == anyio.run(fastapi_reading)


def test_remembered_requests_are_bounded() -> None:
    memo = RepeatMemo(max_entries=3)
    keys = [("POST", "/v1/init", b"", b"application/json", b"", str(i).encode()) for i in range(5)]
    answer = Answer(key("a"), [], None, None)
    for request_key in keys:
        memo.put(request_key, answer)
    assert len(memo) == 3 and memo.get(keys[0]) is None and memo.get(keys[4]) is answer


def test_only_short_successful_small_file_requests_are_remembered() -> None:
    """In process (the memo is not visible over HTTP: a remembered repeat and the full path answer alike)."""
    app = create_app(Settings())
    memo: RepeatMemo = app.state.repeat_memo
    spec = {"shape": [8, 8], "scheme": "normal", "seed": 5}
    headers = {"Content-Type": "application/json"}

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for body in (
                json.dumps(spec) + " " * 5000,  # valid, but over the 4 KiB a remembered request may take
                json.dumps({**spec, "scheme": "nope"}),  # 422
                json.dumps({**spec, "shape": [1024, 1024]}),  # 4 MiB: streamed, never cached
                json.dumps(spec),  # remembered
                json.dumps(spec),  # answered from the memo: nothing new
            ):
                response = await client.post("/v1/init", content=body, headers=headers)
                seen.append((response.status_code, len(memo)))
        return seen

    assert anyio.run(scenario) == [(200, 0), (422, 0), (200, 0), (200, 1), (200, 1)]


def test_a_remembered_request_is_not_answered_without_a_valid_key_nor_to_a_range() -> None:
    """In process: the memo and the /v1/init fast path apply the key rule and the bypass headers."""
    app = create_app(Settings(api_keys="reader"))
    memo: RepeatMemo = app.state.repeat_memo
    body = json.dumps({"shape": [8, 8], "scheme": "normal", "seed": 9})
    json_type = {"Content-Type": "application/json"}

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.post("/v1/init", content=body, headers={**json_type, "X-API-Key": "reader"})
            seen.append((first.status_code, len(memo)))
            for headers in ({}, {"X-API-Key": "nobody"}, {"Authorization": "Bearer nobody"}, {"X-API-Key": "reader"}):
                response = await client.post("/v1/init", content=body, headers={**json_type, **headers})
                assert response.status_code != 200 or response.content == first.content
                seen.append((response.status_code, len(memo)))
            url = first.headers["content-location"]
            whole = await client.get(url, headers={"X-API-Key": "reader"})
            seen.append((whole.status_code, len(memo)))
            for _ in range(2):  # the GET is remembered now: a Range must still be served as a range
                part = await client.get(url, headers={"X-API-Key": "reader", "Range": "bytes=0-9"})
                assert part.content == whole.content[:10]
                seen.append((part.status_code, len(memo)))
            keyless = await client.get(url)
            seen.append((keyless.status_code, len(memo)))
        return seen

    assert anyio.run(scenario) == [
        (200, 1),
        (401, 1),
        (401, 1),
        (401, 1),
        (200, 1),
        (200, 2),
        (206, 2),
        (206, 2),
        (401, 2),
    ]


def test_a_write_key_reads_through_the_memo_like_a_read_key() -> None:
    """A write key may read (settings.read_key_values), so its repeats are remembered and answered too."""
    app = create_app(Settings(api_keys="reader", write_api_keys="writer"))
    memo: RepeatMemo = app.state.repeat_memo
    body = json.dumps({"shape": [8, 8], "scheme": "normal", "seed": 9})
    headers = {"Content-Type": "application/json", "X-API-Key": "writer"}

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.post("/v1/init", content=body, headers=headers)
            seen.append((first.status_code, len(memo)))
            again = await client.post("/v1/init", content=body, headers=headers)
            assert again.content == first.content
            seen.append((again.status_code, len(memo)))
            keyless = await client.post("/v1/init", content=body, headers={"Content-Type": "application/json"})
            seen.append((keyless.status_code, len(memo)))
        return seen

    assert anyio.run(scenario) == [(200, 1), (200, 1), (401, 1)]
