"""The authoritative digest of a generated file, so a client can prove the bytes it received.

Two forms, both SHA-256 of the exact file bytes the service sends:

- ``Repr-Digest: sha-256=:<base64>:`` (RFC 9530) on every response whose whole file the server holds
  before sending (small files, see the response cache), 200 and 206 alike: the digest of the whole
  representation, known before the first byte goes out.
- ``?format=digest``: JSON with the **tree hash** (SHA-256 over 64 MiB leaves, the client cache's
  content hash) and every leaf's SHA-256. A streamed file's digest cannot precede its bytes, so the
  server computes it on request by generating the file again without sending it (chunk by chunk, under
  a generation slot, cancellable like stats) and remembers it (bounded LRU keyed by the file's digest).

Tree hash (docs/api.md): ``L = 2**26``; ``d_i = SHA-256(bytes[i·L, min((i+1)·L, size)))`` for
``i < max(1, ⌈size/L⌉)``; ``tree_sha256 = hex(SHA-256(d_0 ‖ … ‖ d_{k−1}))``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

from initserve.api.streaming import ByteSource
from initserve.engine import Kernel

LEAF_SIZE = 1 << 26
DIGEST_MEMO_ENTRIES = 4096  # a few hundred bytes each (an 8 GiB file has 128 leaves)


def repr_digest(data: bytes) -> str:
    """The RFC 9530 ``Repr-Digest`` field value of ``data``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


class TreeHashRun:
    """The tree hash of ``source``'s bytes, one engine chunk per :meth:`step` (see ``StatsRun``)."""

    def __init__(self, source: ByteSource, *, kernel: Kernel | None = None, threads: int | None = None) -> None:
        self.size = int(source.total_length)
        self._chunks: Iterator[memoryview] = source.iter_bytes(kernel=kernel, threads=threads)
        self._leaf = hashlib.sha256()
        self._in_leaf = 0
        self.leaves: list[bytes] = []

    def step(self) -> bool:
        view = next(self._chunks, None)
        if view is None:
            if self._in_leaf or not self.leaves:
                self.leaves.append(self._leaf.digest())
                self._in_leaf = 0
            return False
        data = view.cast("B")
        while len(data):
            take = min(len(data), LEAF_SIZE - self._in_leaf)
            self._leaf.update(data[:take])
            self._in_leaf += take
            data = data[take:]
            if self._in_leaf == LEAF_SIZE:
                self.leaves.append(self._leaf.digest())
                self._leaf, self._in_leaf = hashlib.sha256(), 0
        return True

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def result(self) -> dict[str, Any]:
        return digest_body(self.size, self.leaves)


def digest_body(size: int, leaves: list[bytes]) -> dict[str, Any]:
    """The ``?format=digest`` JSON for a file of ``size`` bytes with these leaf digests."""
    return {
        "content_length": size,
        "leaf_size": LEAF_SIZE,
        "leaves": [leaf.hex() for leaf in leaves],
        "tree_sha256": hashlib.sha256(b"".join(leaves)).hexdigest(),
    }


def digest_of_bytes(data: bytes) -> dict[str, Any]:
    """``digest_body`` of a file held in memory."""
    view = memoryview(data)
    leaves = [hashlib.sha256(view[i : i + LEAF_SIZE]).digest() for i in range(0, len(data), LEAF_SIZE)]
    return digest_body(len(data), leaves or [hashlib.sha256(b"").digest()])
