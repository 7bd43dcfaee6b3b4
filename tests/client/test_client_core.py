"""Unit tests of the client's pure core: safetensors parsing, retry policy, config, specs, errors,
download bookkeeping and the cache's file handling. No server needed."""

from __future__ import annotations

import email.utils
import hashlib
import io
import itertools
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from initserve_client import (
    AuthenticationError,
    InvalidSpecError,
    MissingDependencyError,
    RetryPolicy,
    SafetensorsFormatError,
    ServiceUnavailableError,
)
from initserve_client import _download as download
from initserve_client import _treehash as treehash
from initserve_client._cache import Cache, CacheEntry
from initserve_client._config import DEFAULT_BASE_URL, resolve_config
from initserve_client._download import BodyWriter, MemorySink, parse_content_range, plan_ranges
from initserve_client._errors import IntegrityError, error_from_response, format_loc
from initserve_client._retry import is_retryable_exception, parse_retry_after
from initserve_client._safetensors import parse
from initserve_client._specs import bundle_body, init_body, request_key
from initserve_client._torch import to_torch
from initserve_client._treehash import tree_sha256

# -- safetensors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.bool_]
)
def test_parse_equals_the_reference_library(dtype: Any) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "b": (rng.standard_normal((3, 5)) * 10).astype(dtype),
        "a": (rng.standard_normal((7,)) * 10).astype(dtype),
        "empty": np.zeros((0, 4), dtype),
        "scalar": np.asarray(3, dtype),
    }
    raw = safetensors.numpy.save(tensors, metadata={"k": "v"})
    parsed = parse(raw)
    assert parsed.metadata == {"k": "v"}
    for name, array in tensors.items():
        got = parsed.array(name)
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)
        assert np.shares_memory(got, np.frombuffer(raw, np.uint8)) or got.size == 0, "views, not copies"


def test_bfloat16_and_float8_via_ml_dtypes_and_torch() -> None:
    values = torch.randn(4, 6)
    raw = safetensors.torch.save({"bf": values.to(torch.bfloat16), "f8": values.to(torch.float8_e4m3fn)})
    parsed = parse(raw)
    bf = parsed.array("bf")
    assert bf.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(bf.astype(np.float32), values.to(torch.bfloat16).float().numpy())
    as_torch = to_torch(parsed.array("bf", raw_bits=True), "BF16")
    assert as_torch.dtype == torch.bfloat16 and torch.equal(as_torch, values.to(torch.bfloat16))
    f8 = to_torch(parsed.array("f8", raw_bits=True), "F8_E4M3")
    assert f8.dtype == torch.float8_e4m3fn and torch.equal(f8.float(), values.to(torch.float8_e4m3fn).float())


def test_bfloat16_without_ml_dtypes_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = safetensors.torch.save({"w": torch.ones(2, dtype=torch.bfloat16)})
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # makes `import ml_dtypes` fail
    parsed = parse(raw)
    with pytest.raises(MissingDependencyError, match=r"initserve\[bf16\]"):
        parsed.array("w")
    assert to_torch(parsed.array("w", raw_bits=True), "BF16").tolist() == [1.0, 1.0]


def _file(header: dict[str, Any], data: bytes, *, size: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if size is None else size) + text + data


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00", "at least 8"),
        (struct.pack("<Q", 10**9), "exceeds the limit"),
        (struct.pack("<Q", 100) + b"{}", "runs past the end"),
        (struct.pack("<Q", 3) + b"{x}", "not valid UTF-8 JSON"),
        (_file([], b""), "must be a JSON object"),  # type: ignore[arg-type]
        (_file({"w": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown dtype"),
        (_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "needs 8"),
        (_file({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "negative"),
        (_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "without gaps"),
        (_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "cover 4"),
        (_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4), "begin ≤ end"),
        (_file({"__metadata__": {"a": 1}}, b""), "strings to strings"),
        (_file({"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 4]}}, b"\0" * 4), "list of integers"),
        # Nesting deeper than the JSON parser's recursion limit: a format error, not a RecursionError.
        (struct.pack("<Q", 20000) + b"[" * 10000 + b"]" * 10000, "nested too deeply"),
    ],
)
def test_malformed_files_are_rejected_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(SafetensorsFormatError, match=message):
        parse(raw)


# -- retry policy --------------------------------------------------------------------------------------


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    low, high = (
        RetryPolicy(base=1.0, max_backoff=5.0, rng=lambda: 0.0),
        RetryPolicy(base=1, max_backoff=5, rng=lambda: 1.0),
    )
    assert [low.backoff(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    assert [high.backoff(k) for k in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_status_decisions() -> None:
    policy = RetryPolicy(attempts=3, base=1.0, rng=lambda: 1.0)
    assert policy.delay_after_status(1, 503, None) == 1.0
    assert policy.delay_after_status(1, 503, "7") == pytest.approx(7.7)  # told 7 s, jitter ≤ 0.7 s
    assert RetryPolicy(rng=lambda: 0.0).delay_after_status(1, 429, "7") == 7.0
    assert policy.delay_after_status(2, 502, None) == 2.0
    assert policy.delay_after_status(3, 503, "1") is None, "attempts exhausted"
    for status in (400, 401, 404, 413, 422, 500):
        assert policy.delay_after_status(1, status, None) is None
    assert RetryPolicy(max_retry_after=10).delay_after_status(1, 503, "11") is None


def test_retry_after_formats() -> None:
    assert parse_retry_after("120") == 120.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_which_exceptions_are_retried() -> None:
    request = httpx.Request("GET", "http://127.0.0.1")
    assert is_retryable_exception(httpx.ConnectError("x", request=request))
    assert is_retryable_exception(httpx.ReadTimeout("x", request=request))
    assert is_retryable_exception(httpx.RemoteProtocolError("x", request=request))
    assert not is_retryable_exception(httpx.UnsupportedProtocol("x", request=request))
    assert not is_retryable_exception(ValueError("x"))
    policy = RetryPolicy(attempts=2, base=0.1, rng=lambda: 1.0)
    assert policy.delay_after_exception(1, httpx.ConnectError("x")) == 0.1
    assert policy.delay_after_exception(2, httpx.ConnectError("x")) is None


# -- configuration, specs, errors ----------------------------------------------------------------------


def test_config_from_arguments_environment_and_defaults(tmp_path: Path) -> None:
    env = {
        "INITSERVE_URL": "http://10.1.2.3:9000/",
        "INITSERVE_API_KEY": "k",
        "INITSERVE_OFFLINE": "yes",
        "INITSERVE_CACHE_DIR": str(tmp_path),
        "INITSERVE_TIMEOUT": "5",
    }
    config = resolve_config(env=env)
    assert (config.base_url, config.api_key, config.offline, config.cache_dir) == (
        "http://10.1.2.3:9000",
        "k",
        True,
        tmp_path,
    )
    assert config.timeout.read == 5.0
    # Answers computed whole (stats, diagnose) wait longer than a stream's read, and connect as quickly.
    assert (config.compute_timeout.read, config.compute_timeout.connect) == (1800.0, 5.0)
    assert resolve_config(env={**env, "INITSERVE_COMPUTE_TIMEOUT": "90"}).compute_timeout.read == 90.0
    assert resolve_config(compute_timeout=7, env=env).compute_timeout.read == 7.0
    explicit = resolve_config(base_url="https://x", api_key="a", offline=False, cache=False, timeout=3, env=env)
    assert (explicit.base_url, explicit.api_key, explicit.offline, explicit.cache_dir) == (
        "https://x",
        "a",
        False,
        None,
    )
    default = resolve_config(env={})
    assert default.base_url == DEFAULT_BASE_URL == "http://127.0.0.1:8000"
    assert default.api_key is None and not default.offline and default.cache_dir is not None
    assert resolve_config(env={"INITSERVE_PROGRESS": "0"}).progress is False


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"base_url": "ftp://x"}, {}, "base_url must start with http"),
        ({"retries": 0}, {}, "retries .* ≥ 1"),
        ({"parallel": 0}, {}, "parallel must be ≥ 1"),
        ({}, {"INITSERVE_OFFLINE": "maybe"}, "INITSERVE_OFFLINE must be one of"),
        ({}, {"INITSERVE_TIMEOUT": "long"}, "INITSERVE_TIMEOUT must be a number"),
        ({}, {"INITSERVE_COMPUTE_TIMEOUT": "long"}, "INITSERVE_COMPUTE_TIMEOUT must be a number"),
        ({"compute_timeout": 0}, {}, "compute_timeout must be a number of seconds > 0"),
        ({"timeout": -1}, {}, "timeout must be a number of seconds > 0"),
        ({}, {"INITSERVE_TIMEOUT": "nan"}, "timeout must be a number of seconds > 0"),
        ({"compute_timeout": float("nan")}, {}, "compute_timeout must be a number of seconds > 0"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_config(env=env, **kwargs)


def test_bodies_and_request_keys() -> None:
    # numpy scalars are accepted at run time (they come out of shape arithmetic) though not typed as int
    seed: Any = np.uint64(2**64 - 1)
    shape: Any = (np.int64(4), 3)
    body = init_body(shape, "normal", seed=seed, params={"std": np.float32(0.5)}, name="w")
    assert body == {"shape": [4, 3], "scheme": "normal", "seed": 2**64 - 1, "params": {"std": 0.5}, "name": "w"}
    assert json.loads(json.dumps(body)) == body
    reordered = {"name": "w", "seed": 2**64 - 1, "params": {"std": 0.5}, "scheme": "normal", "shape": [4, 3]}
    assert request_key("/v1/init", body) == request_key("/v1/init", reordered)
    assert request_key("/v1/init", body) != request_key("/v1/bundle", body)
    assert request_key("/v1/init", body) != request_key("/v1/init", {**body, "seed": 1})
    bundle = bundle_body({"fc.weight": {"shape": (2, 2), "scheme": "eye"}}, seed=3, dtype="float16")
    assert bundle == {"tensors": {"fc.weight": {"shape": [2, 2], "scheme": "eye"}}, "seed": 3, "dtype": "float16"}
    assert init_body([1], "constant", params={"value": True}, name="w")["params"] == {"value": True}, (
        "booleans stay booleans"
    )


def test_problem_details_become_typed_errors() -> None:
    problem = {
        "type": "urn:initserve:problem:invalid-spec",
        "title": "Invalid spec",
        "status": 422,
        "errors": [
            {"loc": ["body", "params", "sparsity"], "msg": "params.sparsity is required"},
            {"loc": ["body", "shape", 1], "msg": "must be ≥ 0, got -3"},
        ],
    }
    error = error_from_response(
        422, "application/problem+json", json.dumps(problem).encode(), method="POST", url="/v1/init"
    )
    assert isinstance(error, InvalidSpecError) and isinstance(error, ValueError)
    assert error.slug == "invalid-spec"
    assert str(error) == (
        "422 invalid-spec (POST /v1/init): params.sparsity is required; shape[1]: must be ≥ 0, got -3"
    )
    unavailable = error_from_response(503, "text/html", b"<h1>busy</h1>", retry_after="2")
    assert isinstance(unavailable, ServiceUnavailableError) and unavailable.retry_after == "2"
    assert "busy" in str(unavailable)
    assert isinstance(error_from_response(401, "application/json", b"{}"), AuthenticationError)
    assert format_loc(("body", "tensors", "fc.weight", "shape", 0)) == "tensors.fc.weight.shape[0]"


# -- downloads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "parts"), [(0, 4), (1, 4), (100 << 20, 4), ((100 << 20) + 3, 3), (20 << 20, 8)])
@pytest.mark.parametrize("align", [1, 64 << 20, 3 << 20])
def test_range_plans_tile_the_file(total: int, parts: int, align: int) -> None:
    ranges = plan_ranges(total, parts, align=align)
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert len(ranges) <= parts
    assert all(b - a >= (8 << 20) for a, b in ranges) or len(ranges) == 1


@pytest.mark.parametrize(
    ("total", "parts", "starts_mib"),
    [
        ((1 << 30) + 200, 4, [0, 256, 512, 768]),  # 16 whole leaves and a short one: 4 + 4 + 4 + 5
        (200 << 20, 4, [0, 64, 128]),  # 3 whole leaves: 3 parts, the last with the 8 MiB tail
        (129 << 20, 3, [0, 64]),  # 2 whole leaves: 2 parts
        (100 << 20, 4, [0, 25, 50, 75]),  # fewer than 2 whole leaves: even parts (a leaf is cut anyway)
    ],
)
def test_range_plans_cut_no_tree_hash_leaf_when_they_can(total: int, parts: int, starts_mib: list[int]) -> None:
    ranges = plan_ranges(total, parts, align=64 << 20)
    assert [start / (1 << 20) for start, _ in ranges] == starts_mib
    assert ranges[-1][1] == total


def test_content_range_parsing() -> None:
    assert parse_content_range("bytes 0-99/1000") == (0, 100, 1000)
    assert parse_content_range("bytes 5-5/*") == (5, 6, None)
    assert parse_content_range("bytes */1000") is None and parse_content_range(None) is None


def tree_hash(data: bytes, leaf: int = 64 << 20) -> str:
    """The cache's documented blob name, computed here independently of the client's code."""
    pieces = [data[i : i + leaf] for i in range(0, len(data), leaf)] or [b""]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in pieces)).hexdigest()


def test_body_writer_fills_its_slice_and_checks_the_response() -> None:
    buffer = memoryview(bytearray(10))
    writer = BodyWriter(MemorySink(buffer), 2, 8, hash_body=True)
    assert writer.range_header() == "bytes=2-7"
    with pytest.raises(IntegrityError, match="ignored the Range"):
        writer.begin(200, {})
    with pytest.raises(IntegrityError, match="Content-Range"):
        writer.begin(206, {"content-range": "bytes 0-5/10"})
    writer.begin(206, {"content-range": "bytes 2-7/10"})
    writer.write(b"abc")
    assert writer.range_header() == "bytes=5-7", "a resumed request asks only for what is missing"
    with pytest.raises(IntegrityError, match="more than"):
        writer.write(b"defg")
    writer.write(b"def")
    writer.finish()
    assert bytes(buffer) == b"\0\0abcdef\0\0"
    assert writer.leaf_digests() == {}, "the file's only leaf is not inside this range: left to the caller"


@pytest.mark.parametrize("size", [0, 5, (64 << 20) - 1, 64 << 20, (64 << 20) + 1, (128 << 20) + 7])
def test_tree_hash_matches_an_independent_computation(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    expected = tree_hash(data)
    assert tree_sha256(data) == tree_sha256(memoryview(data), workers=1) == expected
    assert tree_sha256(data, workers=4) == expected
    if data:
        flipped = bytearray(data)
        flipped[size // 2] ^= 0x10
        assert tree_sha256(flipped) != expected


def test_writers_hash_their_leaves_and_the_rest_comes_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(treehash, "LEAF_SIZE", 1000)
    monkeypatch.setattr(download, "RECEIVE_STEP", 333)
    payload = np.random.default_rng(1).integers(0, 256, 10_007, dtype=np.uint8).tobytes()
    buffer = memoryview(bytearray(len(payload)))
    ranges = plan_ranges(len(payload), 3, min_part=1)
    writers = [BodyWriter(MemorySink(buffer), a, b, hash_body=True) for a, b in ranges]
    for writer, (a, b) in zip(writers, ranges, strict=True):
        writer.begin(206, {"content-range": f"bytes {a}-{b - 1}/{len(payload)}"})
        source = io.BytesIO(payload[a:b])
        writer.receive(source.readinto)
        writer.finish()
    assert bytes(buffer) == payload
    leaves = [writer.leaf_digests() or {} for writer in writers]
    # ranges of 3336/3336/3335 bytes: leaves 3 and 6 straddle a boundary and are nobody's
    assert sorted(i for part in leaves for i in part) == [0, 1, 2, 4, 5, 7, 8, 9, 10]
    asked: list[list[int]] = []

    def rest(missing: list[int]) -> dict[int, bytes]:
        asked.append(missing)
        return treehash.hash_leaves(buffer, missing)

    assert treehash.assemble(len(payload), leaves, rest) == tree_hash(payload, 1000)
    assert asked == [[3, 6]]


def test_trailing_hash_equals_hashlib_across_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(treehash, "LEAF_SIZE", 1000)  # many leaves on a small body
    payload = np.random.default_rng(1).integers(0, 256, 10_007, dtype=np.uint8).tobytes()
    writer = BodyWriter(MemorySink(memoryview(bytearray(len(payload)))), hash_body=True)
    writer.begin(200, {"content-length": str(len(payload))})
    writer.write(payload[:5000])
    writer.begin(200, {"content-length": str(len(payload))})  # a non-resumable retry starts over
    for i in range(0, len(payload), 333):
        writer.write(payload[i : i + 333])
    writer.finish()
    digests = writer.leaf_digests()
    assert digests is not None and sorted(digests) == list(range(11))
    assert treehash.tree_root([digests[i] for i in range(11)]) == tree_hash(payload, 1000)


def test_file_sink_receives_through_recycled_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(treehash, "LEAF_SIZE", 4096)
    monkeypatch.setattr(download, "RECEIVE_STEP", 1000)  # more pieces than ring buffers
    payload = np.random.default_rng(2).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    cache = Cache(tmp_path)
    cache.ensure()
    blob = cache.new_blob(len(payload))
    writer = BodyWriter(blob, hash_body=True)
    writer.begin(200, {"content-length": str(len(payload))})
    first = io.BytesIO(payload[:20_000])
    writer.receive(first.readinto)  # the body stops short: a broken stream
    assert writer.offset == 20_000
    with pytest.raises(IntegrityError, match="ended at byte 20000"):
        writer.finish()
    writer.begin(206, {"content-range": f"bytes 20000-{len(payload) - 1}/{len(payload)}"})  # resumed
    writer.receive(io.BytesIO(payload[20_000:]).readinto)
    writer.finish()
    digests = writer.leaf_digests()
    assert digests is not None
    assert treehash.tree_root([digests[i] for i in sorted(digests)]) == tree_hash(payload, 4096)
    assert bytes(blob.mapped()) == payload
    blob.abort()


def test_body_writer_allocates_from_content_length_and_detects_short_bodies() -> None:
    allocated: list[int] = []

    def allocate(size: int) -> MemorySink:
        allocated.append(size)
        return MemorySink(memoryview(bytearray(size)))

    writer = BodyWriter(None, allocate=allocate)
    assert writer.range_header() is None
    writer.begin(200, {"content-length": "4"})
    writer.write(b"ab")
    with pytest.raises(IntegrityError, match="ended at byte 2, expected 4"):
        writer.finish()
    assert allocated == [4]
    with pytest.raises(IntegrityError, match="ETag changed"):
        BodyWriter(MemorySink(memoryview(bytearray(1))), expected_etag='"a"').begin(200, {"etag": '"b"'})


# -- cache files --------------------------------------------------------------------------------------


def test_blob_writer_commits_atomically_and_reads_verify(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.ensure()
    writer = cache.new_blob(6)
    writer.write_at(3, b"def")
    writer.write_at(0, b"abc")
    assert bytes(writer.mapped()) == b"abcdef"
    sha = tree_hash(b"abcdef")
    assert not cache.blob_path(sha).exists(), "nothing is visible before commit"
    writer.commit(sha)
    entry = CacheEntry(etag='"e1"', digest=sha, size=6)
    cache.record(entry, request_key="k1")
    assert cache.lookup_request("k1") == entry and cache.lookup_etag('"e1"') == entry
    view = cache.open_blob(entry)
    assert view is not None and bytes(view) == b"abcdef"
    view[0] = ord("z")  # copy-on-write: the file keeps its bytes
    assert cache.blob_path(sha).read_bytes() == b"abcdef"
    cache.blob_path(sha).write_bytes(b"abcdeX")
    assert cache.open_blob(entry) is None, "a mismatching tree hash is discarded"
    assert not cache.blob_path(sha).exists() and cache.lookup_etag('"e1"') is None
    aborted = cache.new_blob(3)
    aborted.abort()
    assert list((tmp_path / "v2" / "tmp").iterdir()) == []


def test_unreadable_index_entries_are_dropped(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.ensure()
    (tmp_path / "v2" / "index" / "requests" / "bad.json").write_text("{not json")
    assert cache.lookup_request("bad") is None
    assert not (tmp_path / "v2" / "index" / "requests" / "bad.json").exists()


def test_lock_times_out_and_lets_the_caller_proceed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.ensure()
    first, second = cache.lock('"x"', timeout=5), cache.lock('"x"', timeout=0.3)
    assert first.acquire()
    start = time.monotonic()
    assert second.acquire() is False
    assert 0.3 <= time.monotonic() - start < 2
    first.release()
    assert second.acquire() is True
    second.release()


def test_cache_verify_uses_the_tree_rule_on_every_leaf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(treehash, "LEAF_SIZE", 1000)
    cache = Cache(tmp_path)
    cache.ensure()
    payload = np.random.default_rng(3).integers(0, 256, 3500, dtype=np.uint8).tobytes()
    good, bad = tree_hash(payload, 1000), tree_hash(payload[::-1], 1000)
    cache.blob_path(good).write_bytes(payload)
    flipped = bytearray(payload[::-1])
    flipped[2500] ^= 0x01  # a bit in the third of four leaves
    cache.blob_path(bad).write_bytes(bytes(flipped))
    report = cache.verify_all()
    assert report.ok == [good] and report.corrupted == [bad]
    assert not cache.blob_path(bad).exists()


def test_result_memory_is_writable_and_holds_what_was_written() -> None:
    from initserve_client._memory import PREFAULT_THRESHOLD, allocate_buffer

    for size in (10, PREFAULT_THRESHOLD + 12345):
        view = allocate_buffer(size)
        assert view.nbytes == size and not view.readonly
        pattern = np.arange(size, dtype=np.uint64).astype(np.uint8)
        view[:] = pattern.tobytes()
        assert np.array_equal(np.frombuffer(view, dtype=np.uint8), pattern)
