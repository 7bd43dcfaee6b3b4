"""Whole-tensor results computed once: a byte-bounded LRU with single-flight computation.

Orthogonal and sparse have no random access: every request, every range of a multi-range request
and every slice of such a tensor needs the whole tensor. Their results are pure functions of the
canonical spec and the algorithm version (the spec's digest), so the first computation can serve
all of them. :class:`WholeResultCache` keeps finished results (flat arrays in the storage dtype, the
*unsliced* tensor, read-only) up to ``budget_bytes``, least recently used first out; a result larger
than the budget is computed and shared with the requests waiting for it, then dropped. Concurrent
requests for the same tensor wait for the one computing it (threads: generation runs in worker
threads) instead of computing it again.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cachetools import LRUCache

from initserve.engine import Kernel, SafetensorsFile, Spec
from initserve.engine.generate import Array, compute_whole

WholeKey = tuple[str, int]  # (digest of the unsliced canonical spec, algorithm version)


@dataclass
class _Flight:
    """A computation in progress; ``result`` stays None if it failed."""

    done: threading.Event = field(default_factory=threading.Event)
    result: Array | None = None


class _SizedLRU(LRUCache[WholeKey, Array]):
    def __init__(self, budget_bytes: int, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize=budget_bytes, getsizeof=lambda array: int(array.nbytes))
        self.on_evict = on_evict

    def popitem(self) -> tuple[WholeKey, Array]:
        self.on_evict()
        return super().popitem()


def _noop() -> None:
    return None


class WholeResultCache:
    """Thread-safe; :meth:`get` is a :data:`initserve.engine.generate.WholeSource`.

    Invariant: the sum of ``nbytes`` of the kept results never exceeds ``budget_bytes``. Callbacks
    (metrics): ``on_hit`` (kept, or shared with an identical computation in flight), ``on_miss``
    (computed here), ``on_evict``, ``on_size(entries, stored_bytes)``.
    """

    def __init__(self, budget_bytes: int, compute: Callable[[Spec, Kernel], Array] = compute_whole) -> None:
        self.budget_bytes = budget_bytes
        self._compute = compute
        self._lock = threading.Lock()
        self._flights: dict[WholeKey, _Flight] = {}
        self.on_hit: Callable[[], None] = _noop
        self.on_miss: Callable[[], None] = _noop
        self.on_size: Callable[[int, int], None] = lambda entries, stored: None
        self._kept = _SizedLRU(max(budget_bytes, 1), lambda: self.on_evict())
        self.on_evict: Callable[[], None] = _noop

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            return int(self._kept.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def get(self, spec: Spec, kernel: Kernel) -> Array:
        """The whole tensor of ``spec`` (its slice ignored): kept, shared with a computation in
        flight, or computed here with ``kernel`` (and then kept if it fits the budget). The kernel is
        not part of the key: every kernel computes the same bytes."""
        if spec.slice is not None:
            spec = dataclasses.replace(spec, slice=None)
        key = (spec.digest(), spec.algorithm)
        while True:
            with self._lock:
                kept = self._kept.get(key)
                if kept is not None:
                    self.on_hit()
                    return kept
                flight = self._flights.get(key)
                owner = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight()
            if owner:
                return self._run(key, spec, kernel, flight)
            flight.done.wait()
            if flight.result is not None:
                self.on_hit()
                return flight.result
            # the computing request failed: try again, possibly computing it here

    def _run(self, key: WholeKey, spec: Spec, kernel: Kernel, flight: _Flight) -> Array:
        try:
            result = self._compute(spec, kernel)
            result.flags.writeable = False  # shared by every request from now on
            flight.result = result
        finally:
            with self._lock:
                del self._flights[key]
                if flight.result is not None and 0 < flight.result.nbytes <= self.budget_bytes:
                    self._kept[key] = flight.result
                entries, stored = len(self._kept), int(self._kept.currsize)
            flight.done.set()
        self.on_miss()
        self.on_size(entries, stored)
        return result


@dataclass(frozen=True)
class WholeCachedFile:
    """The engine's file with whole-tensor results taken from (and given to) a cache. ``reuse=False``:
    every yielded view is of a new buffer the reader may keep (``SafetensorsFile.iter_bytes``)."""

    file: SafetensorsFile
    cache: WholeResultCache
    reuse: bool = True

    @property
    def total_length(self) -> int:
        return int(self.file.total_length)

    def iter_bytes(
        self, start: int = 0, stop: int | None = None, *, kernel: Kernel | None = None, threads: int | None = None
    ) -> Iterator[memoryview]:
        return self.file.iter_bytes(
            start, stop, kernel=kernel, threads=threads, whole_source=self.cache.get, reuse=self.reuse
        )
