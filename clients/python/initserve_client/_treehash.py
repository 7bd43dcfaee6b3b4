"""The cache's content hash: a SHA-256 tree hash over fixed 64 MiB leaves.

Definition (cache layout 2)::

    L      = 64 MiB = 2**26 bytes
    leaf_i = bytes[i·L, min((i+1)·L, size))          for i = 0 … max(1, ⌈size / L⌉) - 1
    d_i    = SHA-256(leaf_i)                          (32 raw bytes; an empty file has one empty leaf)
    name   = hex(SHA-256(d_0 ‖ d_1 ‖ … ‖ d_{k-1}))

Every byte is still checked by SHA-256 and nothing but the file itself is trusted (no sidecar of
leaf digests): changing any byte changes its leaf digest and therefore the name. What the tree buys is
independence: leaves can be hashed on several cores at once (hashlib releases the GIL), and a download
can hash each leaf while its bytes arrive, in order, without waiting for the whole file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "LEAF_SIZE",
    "HashPipeline",
    "LeafHasher",
    "assemble",
    "hash_leaves",
    "leaf_count",
    "tree_root",
    "tree_sha256",
    "verify_workers",
]

LEAF_SIZE = 64 << 20


def leaf_count(size: int) -> int:
    """Number of leaves of a ``size``-byte file: ``max(1, ⌈size / LEAF_SIZE⌉)``."""
    return max(1, -(-size // LEAF_SIZE))


def tree_root(digests: Sequence[bytes]) -> str:
    """``hex(SHA-256(d_0 ‖ … ‖ d_{k-1}))`` of the raw leaf digests, in leaf order."""
    if not digests:
        raise ValueError("a tree hash has at least one leaf")
    return hashlib.sha256(b"".join(digests)).hexdigest()


def verify_workers() -> int:
    """Threads that hash a cached file's leaves: one per core, at most 4.

    The caller is waiting for the verified bytes, so every core may help; four SHA-256 streams
    (≈1.5 GB/s each with SHA-NI) stay well below memory bandwidth.
    """
    return max(1, min(4, os.cpu_count() or 1))


def tree_sha256(data: memoryview | bytes | bytearray, *, workers: int | None = None) -> str:
    """The tree hash of a buffer, its leaves hashed by ``workers`` threads (default :func:`verify_workers`)."""
    count = leaf_count(memoryview(data).nbytes)
    digests = hash_leaves(data, range(count), workers=workers)
    return tree_root([digests[i] for i in range(count)])


class LeafHasher:
    """Digests of the leaves lying wholly inside the bytes ``[start, stop)`` of a ``size``-byte file.

    A download writer (one byte range of the file) feeds the bytes it receives, in order from
    ``start``; :meth:`digests` gives the leaves the range covers entirely. A leaf cut by a range
    boundary (parallel ranges) is left to the caller, who hashes it from the finished file.
    """

    def __init__(self, start: int, stop: int, size: int) -> None:
        self.start, self.stop, self.size = start, stop, size
        first = -(-start // LEAF_SIZE)
        last = leaf_count(size) if stop >= size else stop // LEAF_SIZE  # leaves [first, last)
        self._first, self._last = first, max(first, last)
        self._from = min(first * LEAF_SIZE, size)
        self._to = min(self._last * LEAF_SIZE, size) if self._last > first else self._from
        self.reset()

    def reset(self) -> None:
        self._position = self.start
        self._index = self._first
        self._leaf = hashlib.sha256()
        self._filled = 0
        self._done: dict[int, bytes] = {}

    def update(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        begin = self._position
        self._position += view.nbytes
        low, high = max(begin, self._from), min(self._position, self._to)
        if low >= high:
            return
        view = view[low - begin : high - begin]
        while view.nbytes:
            take = min(view.nbytes, LEAF_SIZE - self._filled)
            self._leaf.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == LEAF_SIZE:
                self._close_leaf()

    def _close_leaf(self) -> None:
        self._done[self._index] = self._leaf.digest()
        self._index += 1
        self._leaf = hashlib.sha256()
        self._filled = 0

    def digests(self) -> dict[int, bytes]:
        """Leaf index → digest for every leaf inside the range (call once every byte was fed)."""
        if self._position < min(self.stop, self.size):
            raise ValueError(f"only {self._position - self.start} of the range's bytes were hashed")
        if self._index < self._last:  # the file's last leaf: short, or empty for an empty file
            self._close_leaf()
        return dict(self._done)


def hash_leaves(
    data: memoryview | bytes | bytearray, indices: Sequence[int], *, workers: int | None = None
) -> dict[int, bytes]:
    """SHA-256 of the given leaves of a buffer, on up to ``workers`` threads."""
    view = memoryview(data).cast("B")

    def one(index: int) -> bytes:
        return hashlib.sha256(view[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]).digest()

    threads = min(len(indices), workers if workers is not None else verify_workers())
    if threads <= 1:
        return {index: one(index) for index in indices}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="initserve-sha256") as pool:
        return dict(zip(indices, pool.map(one, indices), strict=True))


def assemble(size: int, parts: Sequence[Mapping[int, bytes]], rest: Callable[[list[int]], Mapping[int, bytes]]) -> str:
    """The tree hash from the leaf digests of the writers; ``rest(indices)`` hashes the leaves none covered."""
    merged: dict[int, bytes] = {}
    for part in parts:
        merged.update(part)
    count = leaf_count(size)
    missing = [i for i in range(count) if i not in merged]
    if missing:
        merged.update(rest(missing))
    return tree_root([merged[i] for i in range(count)])


class HashPipeline:
    """Feeds a :class:`LeafHasher` in a background thread, in submission order.

    The receiving thread hands over each piece it has written (with a callback that recycles the
    piece's buffer once hashed) and goes straight back to the socket: hashing overlaps with receiving
    and uses a second core, and since the pieces are small and recent, they are still in the CPU cache.
    """

    def __init__(self, hasher: LeafHasher) -> None:
        self.hasher = hasher
        self._queue: deque[tuple[memoryview | bytes, Callable[[], None] | None] | None] = deque()
        self._ready = threading.Condition()
        self._error: BaseException | None = None
        self._idle = True
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._idle = True
                    self._ready.notify_all()
                    self._ready.wait()
                item = self._queue.popleft()
                self._idle = False
            if item is None:
                with self._ready:
                    self._idle = True
                    self._ready.notify_all()
                return
            data, release = item
            try:
                if self._error is None:
                    self.hasher.update(data)
            except BaseException as exc:  # reported by drain(); keep recycling buffers meanwhile
                self._error = exc
            finally:
                if release is not None:
                    release()

    def submit(self, data: memoryview | bytes, release: Callable[[], None] | None = None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="initserve-sha256", daemon=True)
            self._thread.start()
        with self._ready:
            self._queue.append((data, release))
            self._ready.notify_all()

    def drain(self) -> None:
        """Wait until everything submitted is hashed; re-raise a hashing error."""
        if self._thread is not None:
            with self._ready:
                while self._queue or not self._idle:
                    self._ready.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Drain and stop the thread (idempotent)."""
        if self._thread is None:
            return
        with self._ready:
            self._queue.append(None)
            self._ready.notify_all()
        self._thread.join()
        self._thread = None
