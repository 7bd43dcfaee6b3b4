"""The authoritative digest of a generated file, so a client can prove the bytes it received.

Two forms, both SHA-256 of the exact file bytes the service sends:

- ``Repr-Digest: sha-256=:<base64>:`` (RFC 9530) on every response whose whole file the server holds
  before sending (small files, see the response cache), 200 and 206 alike: the digest of the whole
  representation, known before the first byte goes out.
- ``?format=digest``: JSON with the **tree hash** (SHA-256 over 64 MiB leaves, the client cache's
  content hash) and every leaf's SHA-256. A streamed file's digest cannot precede its bytes, so when
  the request says it will want one (``Want-Repr-Digest: sha-256=…``, RFC 9530; the Python client
  always does) the server hashes each leaf the stream covers *while* streaming it — from the engine's
  buffer, before the bytes are handed to the socket — and remembers the leaf digests
  (:class:`LeafMemo`). A digest request after the download is then a lookup; leaves no such stream of
  this process covered are generated again without being sent (chunk by chunk, under a generation
  slot, cancellable like stats). Answers are remembered too (bounded LRU keyed by the file's digest).

Tree hash (docs/api.md): ``L = 2**26``; ``d_i = SHA-256(bytes[i·L, min((i+1)·L, size)))`` for
``i < max(1, ⌈size/L⌉)``; ``tree_sha256 = hex(SHA-256(d_0 ‖ … ‖ d_{k−1}))``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from cachetools import LRUCache

from initserve.api.streaming import ByteSource
from initserve.engine import Kernel

LEAF_SIZE = 1 << 26
DIGEST_MEMO_ENTRIES = 4096  # a few hundred bytes each (an 8 GiB file has 128 leaves)
# Leaf digests remembered from streams: 65,536 leaves (≈ 8 MiB of Python objects) cover the last
# 4 TiB streamed; a client asks for the digest right after its download, so recency is what counts.
LEAF_MEMO_LEAVES = 1 << 16


_WANT_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*([0-9]+)\s*(?:;[^,]*)?(?=,|$)")


def wants_sha256(value: str | None) -> bool:
    """Whether an RFC 9530 ``Want-Repr-Digest`` field asks for SHA-256 (a preference of 1–10; 0 refuses it)."""
    return any(int(match.group(1)) > 0 for match in _WANT_SHA256.finditer((value or "").lower()))


def repr_digest(data: bytes) -> str:
    """The RFC 9530 ``Repr-Digest`` field value of ``data``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def leaf_count(size: int) -> int:
    """Leaves of a ``size``-byte file: ``max(1, ⌈size / L⌉)`` (an empty file has one empty leaf)."""
    return max(1, -(-size // LEAF_SIZE))


def leaf_span(index: int, size: int) -> tuple[int, int]:
    """Bytes ``[start, stop)`` of leaf ``index`` of a ``size``-byte file."""
    return index * LEAF_SIZE, min((index + 1) * LEAF_SIZE, size)


class LeafDigester:
    """SHA-256 of every leaf lying wholly inside the bytes ``[start, stop)`` of a ``size``-byte file.

    Fed the range's bytes in order from ``start`` (:meth:`update`); :meth:`take` hands over the leaves
    finished since the last call. Leaves cut by the range's ends are skipped (they are not all here).
    """

    def __init__(self, start: int, stop: int, size: int) -> None:
        self._position = start
        first = -(-start // LEAF_SIZE)
        last = leaf_count(size) if stop >= size else stop // LEAF_SIZE  # leaves [first, last)
        self._index, self._last = first, max(first, last)
        self._size = size
        self._leaf = hashlib.sha256()
        self._done: dict[int, bytes] = {}
        if self._index < self._last and leaf_span(self._index, size)[1] == leaf_span(self._index, size)[0]:
            self._close_leaf()  # the one empty leaf of an empty file

    def update(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        begin = self._position
        self._position += view.nbytes
        while self._index < self._last:
            low, high = leaf_span(self._index, self._size)
            low, high = max(low, begin), min(high, self._position)
            if low >= high:
                return
            self._leaf.update(view[low - begin : high - begin])
            if high < leaf_span(self._index, self._size)[1]:
                return
            self._close_leaf()

    def _close_leaf(self) -> None:
        self._done[self._index] = self._leaf.digest()
        self._index += 1
        self._leaf = hashlib.sha256()

    def take(self) -> dict[int, bytes]:
        """The leaves finished since the last call (index → raw SHA-256)."""
        done, self._done = self._done, {}
        return done


class LeafMemo:
    """Leaf digests of generated files, keyed by the file's cache key; bounded by the number of leaves.

    Written by streams (from the event loop, right before the leaf's last chunk is sent, so a client
    that has received a whole file always finds its leaves here), read by ``?format=digest``.
    """

    def __init__(self, max_leaves: int = LEAF_MEMO_LEAVES) -> None:
        self._files: LRUCache[Hashable, dict[int, bytes]] = LRUCache(maxsize=max_leaves, getsizeof=len)
        self._lock = threading.Lock()

    def add(self, key: Hashable, leaves: Mapping[int, bytes]) -> None:
        with self._lock:
            known = dict(self._files.get(key) or {})
            known.update(leaves)
            if len(known) <= self._files.maxsize:  # a file of more leaves than the memo holds is not kept
                self._files[key] = known  # re-inserted: its size (leaf count) is counted again

    def get(self, key: Hashable) -> dict[int, bytes]:
        with self._lock:
            return dict(self._files.get(key) or {})


class LeafRecorder:
    """Hashes the leaves a stream of bytes ``[start, stop)`` covers and files them in a :class:`LeafMemo`.

    :meth:`update` runs in the worker thread that produced the chunk; :meth:`flush` runs on the event
    loop before that chunk is sent, so a leaf's digest is filed before its last byte leaves.
    """

    def __init__(self, memo: LeafMemo, key: Hashable, start: int, stop: int, size: int) -> None:
        self._memo, self._key = memo, key
        self._digester = LeafDigester(start, stop, size)

    def update(self, data: memoryview | bytes) -> None:
        self._digester.update(data)

    def flush(self) -> None:
        done = self._digester.take()
        if done:
            self._memo.add(self._key, done)


class TreeHashRun:
    """The tree hash of ``source``'s bytes, one engine chunk per :meth:`step` (see ``StatsRun``).

    ``known`` leaf digests (hashed while streaming) are used as they are: only the other leaves are
    generated again, in runs of consecutive leaves. :attr:`generated` counts the bytes generated.
    """

    def __init__(
        self,
        source: ByteSource,
        *,
        known: Mapping[int, bytes] | None = None,
        kernel: Kernel | None = None,
        threads: int | None = None,
    ) -> None:
        self.size = int(source.total_length)
        self._leaves: dict[int, bytes] = dict(known or {})
        self._runs = self._missing_runs()
        self._source, self._kernel, self._threads = source, kernel, threads
        self._chunks: Iterator[memoryview] | None = None
        self._digester: LeafDigester | None = None
        self.generated = 0

    def _missing_runs(self) -> list[tuple[int, int]]:
        """Byte ranges of the consecutive leaves not known yet."""
        runs: list[tuple[int, int]] = []
        for index in range(leaf_count(self.size)):
            if index in self._leaves:
                continue
            start, stop = leaf_span(index, self.size)
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((start, stop))
        return runs

    def step(self) -> bool:
        while self._chunks is None:
            if not self._runs:
                return False
            start, stop = self._runs.pop(0)
            self._digester = LeafDigester(start, stop, self.size)
            self._leaves.update(self._digester.take())  # an empty file's empty leaf
            if stop > start:
                self._chunks = self._source.iter_bytes(start, stop, kernel=self._kernel, threads=self._threads)
        assert self._digester is not None
        view = next(self._chunks, None)
        if view is None:
            self.close()
            return True
        self._digester.update(view)
        self._leaves.update(self._digester.take())
        self.generated += view.nbytes
        return True

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._chunks = None

    def result(self) -> dict[str, Any]:
        return digest_body(self.size, [self._leaves[i] for i in range(leaf_count(self.size))])


def digest_body(size: int, leaves: list[bytes]) -> dict[str, Any]:
    """The ``?format=digest`` JSON for a file of ``size`` bytes with these leaf digests."""
    return {
        "content_length": size,
        "leaf_size": LEAF_SIZE,
        "leaves": [leaf.hex() for leaf in leaves],
        "tree_sha256": hashlib.sha256(b"".join(leaves)).hexdigest(),
    }


def complete_digest(size: int, leaves: Mapping[int, bytes]) -> dict[str, Any] | None:
    """``digest_body`` when every leaf of the file is known, else None."""
    count = leaf_count(size)
    if any(index not in leaves for index in range(count)):
        return None
    return digest_body(size, [leaves[i] for i in range(count)])


def digest_of_bytes(data: bytes) -> dict[str, Any]:
    """``digest_body`` of a file held in memory."""
    view = memoryview(data)
    leaves = [hashlib.sha256(view[i : i + LEAF_SIZE]).digest() for i in range(0, len(data), LEAF_SIZE)]
    return digest_body(len(data), leaves or [hashlib.sha256(b"").digest()])
