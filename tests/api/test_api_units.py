"""Pure helpers of the service: range parsing, ETags, tokens, negotiation, keys, settings."""

from __future__ import annotations

import pytest
from initserve.api.http_cache import (
    ByteRange,
    RangeNotSatisfiable,
    if_none_match_hits,
    if_range_allows,
    multipart_plan,
    parse_range,
)
from initserve.api.negotiation import wants_stats
from initserve.api.security import key_matches
from initserve.api.settings import Settings
from initserve.api.tokens import InvalidToken, decode_token, encode_token


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", [ByteRange(0, 10)]),
        ("bytes=90-", [ByteRange(90, 100)]),
        ("bytes=-5", [ByteRange(95, 100)]),
        ("bytes=-500", [ByteRange(0, 100)]),
        ("bytes=95-500", [ByteRange(95, 100)]),
        ("bytes=0-9, 20-29", [ByteRange(0, 10), ByteRange(20, 30)]),
        ("bytes=20-29,0-9", [ByteRange(0, 10), ByteRange(20, 30)]),
        ("bytes=0-9,10-19", [ByteRange(0, 20)]),
        ("bytes=0-50,10-20", [ByteRange(0, 51)]),
        ("bytes=0-9,200-300", [ByteRange(0, 10)]),
        ("BYTES=0-0", [ByteRange(0, 1)]),
        (None, None),
        ("items=0-9", None),
        ("bytes=9-0", None),
        ("bytes=a-b", None),
        ("bytes=", None),
        ("bytes=-", None),
        ("0-9", None),
    ],
)
def test_parse_range(header: str | None, expected: list[ByteRange] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0", "bytes=150-160,200-"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_too_many_ranges_fall_back_to_the_whole_file() -> None:
    header = "bytes=" + ",".join(f"{i * 3}-{i * 3}" for i in range(100))
    assert parse_range(header, 1000) is None


def test_multipart_length_matches_the_bytes() -> None:
    ranges = [ByteRange(0, 10), ByteRange(50, 60)]
    plan = multipart_plan(ranges, 100, "ab" * 32, "application/octet-stream")
    body = plan.parts[0] + b"x" * 10 + plan.parts[1] + b"y" * 10 + plan.epilogue
    assert plan.content_length == len(body)
    assert b"Content-Range: bytes 50-59/100" in plan.parts[1]
    assert body.endswith(f"--{plan.boundary}--\r\n".encode())


def test_etag_conditions() -> None:
    tag = '"abc"'
    assert if_none_match_hits('"abc"', tag) and if_none_match_hits('W/"abc"', tag)
    assert if_none_match_hits('"x", "abc"', tag) and if_none_match_hits("*", tag)
    assert not if_none_match_hits('"abcd"', tag) and not if_none_match_hits(None, tag)
    assert if_range_allows(None, tag) and if_range_allows('"abc"', tag)
    assert not if_range_allows('W/"abc"', tag) and not if_range_allows("Tue, 01 Jan 2030 00:00:00 GMT", tag)


def test_token_round_trip_and_rejections() -> None:
    text = '{"scheme":"normal","shape":[2,3]}'
    token = encode_token("t", text)
    assert "=" not in token and token.startswith("t.")
    assert decode_token(token, 1000) == ("t", {"scheme": "normal", "shape": [2, 3]})
    for bad in ["", "x.abc", "t.", "t.a", "t.a+b/", "t.AAAA", "t.WzFd", "t." + "A" * 2000, "t.eyJhIjpOYU59"]:
        with pytest.raises(InvalidToken):
            decode_token(bad, 1000)


@pytest.mark.parametrize(
    ("fmt", "accept", "stats"),
    [
        (None, None, False),
        (None, "*/*", False),
        (None, "application/json", True),
        (None, "application/json, */*", True),
        (None, "application/octet-stream, application/json;q=0.5", False),
        (None, "application/json;q=0", False),
        ("stats", None, True),
        ("safetensors", "application/json", False),
    ],
)
def test_negotiation(fmt: str | None, accept: str | None, stats: bool) -> None:
    assert wants_stats(fmt, accept) is stats  # type: ignore[arg-type]


def test_key_matching() -> None:
    keys = (b"alpha", b"beta")
    assert key_matches("alpha", keys) and key_matches("beta", keys)
    assert not key_matches("alph", keys) and not key_matches("", keys) and not key_matches("alpha", ())


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INITSERVE_API_KEYS", " k1, k2 ,")
    monkeypatch.setenv("INITSERVE_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("INITSERVE_MAX_CONCURRENT_GENERATIONS", "7")
    monkeypatch.setenv("INITSERVE_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.api_key_values == (b"k1", b"k2")
    assert "k1" not in repr(settings)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.max_concurrent_generations == 7 and settings.log_level == "debug"
    monkeypatch.delenv("INITSERVE_MAX_CONCURRENT_GENERATIONS")
    defaults = Settings()
    assert defaults.max_concurrent_generations == 4 and defaults.host == "127.0.0.1"
    assert defaults.max_bytes == 8 << 30 and defaults.port == 8000 and defaults.timeout_keep_alive == 75
