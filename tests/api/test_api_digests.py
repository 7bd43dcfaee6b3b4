"""``?format=digest`` of streamed files: the leaves a stream sent are hashed on the way out when the
request says it will want the digest (``Want-Repr-Digest``, RFC 9530), and the digest is then a lookup;
only leaves no such stream covered are generated again (never sent)."""

from __future__ import annotations

import hashlib
import random
import re

import httpx
import pytest
from initserve.api.digests import LEAF_SIZE, LeafDigester, digest_of_bytes, wants_sha256

# 9216 x 4096 float32 = 144 MiB of data: three leaves, the last one short.
THREE_LEAVES = {"shape": [9216, 4096], "scheme": "kaiming_normal", "name": "weight"}
WANT = {"Want-Repr-Digest": "sha-256=10"}


def tree_sha256(data: bytes) -> str:
    """The documented definition (docs/api.md), written out independently of the service's code."""
    view = memoryview(data)
    leaves = [hashlib.sha256(view[i : i + LEAF_SIZE]).digest() for i in range(0, len(data), LEAF_SIZE)] or [
        hashlib.sha256(b"").digest()
    ]
    return hashlib.sha256(b"".join(leaves)).hexdigest()


def metric(http: httpx.Client, name: str, labels: str = "") -> float:
    text = http.get("/metrics").text
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+]+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


def url_of(http: httpx.Client, seed: int) -> tuple[str, int]:
    resolved = http.post("/v1/resolve", json={**THREE_LEAVES, "seed": seed}).json()
    return resolved["url"], int(resolved["content_length"])


def regenerated(http: httpx.Client) -> float:
    return metric(http, "initserve_digest_generated_bytes_total")


def test_the_digest_after_a_whole_download_generates_nothing_again(http: httpx.Client) -> None:
    url, size = url_of(http, 101)
    assert size > 2 * LEAF_SIZE
    body = http.get(url, headers=WANT).content
    before, streamed = regenerated(http), metric(http, "initserve_digests_total", 'source="streamed"')
    answer = http.get(url, params={"format": "digest"}).json()
    assert answer["tree_sha256"] == tree_sha256(body)
    assert answer["content_length"] == len(body) == size
    assert len(answer["leaves"]) == 3
    assert regenerated(http) == before
    assert metric(http, "initserve_digests_total", 'source="streamed"') == streamed + 1
    # asked again: the remembered answer
    assert http.get(url, params={"format": "digest"}).json() == answer


def test_the_post_download_also_files_its_leaves(http: httpx.Client) -> None:
    spec = {**THREE_LEAVES, "seed": 102}
    body = http.post("/v1/init", json=spec, headers={"want-repr-digest": "sha-512=3, sha-256=1"}).content
    before = regenerated(http)
    answer = http.post("/v1/init", params={"format": "digest"}, json=spec).json()
    assert answer["tree_sha256"] == tree_sha256(body)
    assert regenerated(http) == before


def test_a_digest_never_streamed_generates_the_file_once_unsent(http: httpx.Client) -> None:
    url, size = url_of(http, 103)
    before = regenerated(http)
    answer = http.get(url, params={"format": "digest"}).json()
    assert regenerated(http) == before + size
    assert answer["tree_sha256"] == tree_sha256(http.get(url).content)


@pytest.mark.parametrize(
    ("ranges", "whole_leaves"),
    [
        ([(0, 2 * LEAF_SIZE)], {0, 1}),
        ([(LEAF_SIZE, None)], {1, 2}),  # to the end: leaf 1 and the short last leaf
        ([(100, LEAF_SIZE + 100)], set()),  # cut leaves only
        ([(0, LEAF_SIZE - 1), (LEAF_SIZE - 1, 2 * LEAF_SIZE)], {1}),  # leaf 0 split between two requests
    ],
    ids=["two-leaves", "to-the-end", "cut", "split"],
)
def test_ranges_file_the_leaves_they_cover_whole(
    http: httpx.Client, ranges: list[tuple[int, int | None]], whole_leaves: set[int]
) -> None:
    url, size = url_of(http, 110 + len(ranges) + 3 * len(whole_leaves) + 7 * min(whole_leaves, default=0))
    for start, stop in ranges:
        last = "" if stop is None else str(stop - 1)
        assert http.get(url, headers={**WANT, "Range": f"bytes={start}-{last}"}).status_code == 206
    covered = sum(min((i + 1) * LEAF_SIZE, size) - i * LEAF_SIZE for i in whole_leaves)
    before = regenerated(http)
    answer = http.get(url, params={"format": "digest"}).json()
    assert regenerated(http) == before + size - covered
    assert answer["tree_sha256"] == tree_sha256(http.get(url).content)


@pytest.mark.parametrize(
    ("headers", "seed"),
    [({}, 141), ({"Want-Repr-Digest": "sha-256=0"}, 142), ({"Want-Repr-Digest": "sha-512=5"}, 143)],
    ids=["none", "0", "other"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_stream_nobody_will_verify_is_not_hashed(
    http: httpx.Client, headers: dict[str, str], seed: int, method: str
) -> None:
    """curl, a browser or a proxy that did not ask for the digest do not pay for hashing (a HEAD never does)."""
    url, size = url_of(http, seed + (10 if method == "HEAD" else 0))
    answer = http.request(method, url, headers=headers if method == "GET" else {**headers, **WANT})
    assert answer.status_code == 200
    before = regenerated(http)
    http.get(url, params={"format": "digest"})
    assert regenerated(http) == before + size


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("sha-256=10", True),
        ("sha-256=1", True),
        ("SHA-256=3", True),
        ("sha-512=10, sha-256=2", True),
        ("sha-256=3;x=1, md5=1", True),
        ("sha-256=0", False),
        ("sha-512=10", False),
        ("", False),
        (None, False),
        ("xsha-256=4", False),
    ],
)
def test_want_repr_digest_is_read_as_rfc_9530_says(value: str | None, wanted: bool) -> None:
    assert wants_sha256(value) is wanted


def test_leaf_digester_matches_the_definition_for_any_chunking_and_range() -> None:
    rng = random.Random(7)
    size = 2 * LEAF_SIZE + 12_345
    data = rng.randbytes(size)
    expected = [bytes.fromhex(leaf) for leaf in digest_of_bytes(data)["leaves"]]
    for start, stop, leaves in [
        (0, size, {0, 1, 2}),
        (1, size, {1, 2}),
        (0, 2 * LEAF_SIZE, {0, 1}),
        (0, 2 * LEAF_SIZE - 1, {0}),
        (LEAF_SIZE, LEAF_SIZE + 5, set()),
        (LEAF_SIZE - 3, 2 * LEAF_SIZE + 3, {1}),
    ]:
        digester = LeafDigester(start, stop, size)
        found: dict[int, bytes] = {}
        position = start
        while position < stop:
            step = min(stop - position, rng.choice([1, 4096, 3 << 20, 40 << 20]))
            digester.update(memoryview(data)[position : position + step])
            found.update(digester.take())
            position += step
        assert found == {i: expected[i] for i in leaves}, (start, stop)


def test_an_empty_range_of_an_empty_file_has_its_empty_leaf() -> None:
    assert LeafDigester(0, 0, 0).take() == {0: hashlib.sha256(b"").digest()}
