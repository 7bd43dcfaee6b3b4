"""A bounded in-memory LRU of small generated files, and single-flight generation of them.

Generated files are pure functions of (canonical spec, algorithm version), so a file made once can
answer every later request for the same digest byte for byte. Only files of at most ``entry_bytes``
are kept (large tensors keep streaming and are never held whole); the sum of the kept files' sizes
never exceeds ``budget_bytes``, the least recently used going first. ``budget_bytes = 0`` keeps
nothing.

Identical requests that arrive while the file is being generated do not generate it again: they
wait for the first one (:meth:`ResponseCache.claim` / :class:`Pending`) and share its bytes, which
is what a job's ranks asking for the same layer at the same moment do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from cachetools import LRUCache

CacheKey = tuple[str, str, int, str]  # (kind, digest, algorithm version, representation)


@dataclass
class Pending:
    """An in-flight generation others can wait for; ``data`` is None if it failed or was abandoned."""

    done: anyio.Event = field(default_factory=anyio.Event)
    data: bytes | None = None

    async def wait(self) -> bytes | None:
        await self.done.wait()
        return self.data


class _SizedLRU(LRUCache[CacheKey, bytes]):
    """cachetools' LRU weighed by byte length, counting the entries it evicts to make room."""

    def __init__(self, budget_bytes: int) -> None:
        super().__init__(maxsize=budget_bytes, getsizeof=len)
        self.evicted = 0

    def popitem(self) -> tuple[CacheKey, bytes]:
        self.evicted += 1
        return super().popitem()


class ResponseCache:
    """LRU of immutable file bytes keyed by :data:`CacheKey`; thread-safe, O(1) per operation.

    Invariants: ``stored_bytes == sum(len(v) for v in entries) <= budget_bytes`` and every entry
    is at most ``entry_bytes`` long. The single-flight table (:meth:`claim`, :meth:`finish`) is
    used from the event loop only.
    """

    def __init__(self, budget_bytes: int, entry_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.entry_bytes = entry_bytes
        # cachetools is not thread-safe; every access holds the lock (reads reorder the LRU too).
        self._entries = _SizedLRU(max(1, budget_bytes))
        self._lock = threading.Lock()
        self._pending: dict[CacheKey, Pending] = {}
        self.on_evict: Callable[[int], None] = lambda _count: None
        self.on_size: Callable[[int, int], None] = lambda _entries, _bytes: None

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0 and self.entry_bytes > 0

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def admits(self, length: int) -> bool:
        """Whether a file of ``length`` bytes may be kept (it fits the per-entry cap and the budget)."""
        return self.enabled and length <= min(self.entry_bytes, self.budget_bytes)

    def get(self, key: CacheKey) -> bytes | None:
        """The stored bytes (now the most recently used entry), or None."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: CacheKey, data: bytes) -> bool:
        """Keep ``data`` if :meth:`admits` its size, evicting least recently used entries to fit."""
        if not self.admits(len(data)):
            return False
        with self._lock:
            before = self._entries.evicted
            self._entries[key] = data
            evicted = self._entries.evicted - before
            entries, stored = len(self._entries), int(self._entries.currsize)
        if evicted:
            self.on_evict(evicted)
        self.on_size(entries, stored)
        return True

    def claim(self, key: CacheKey) -> tuple[Pending, bool]:
        """``(pending, True)`` if the caller now owns the generation of ``key`` and must
        :meth:`finish` it, else ``(pending, False)`` for someone else's generation to wait for."""
        pending = self._pending.get(key)
        if pending is not None:
            return pending, False
        pending = self._pending[key] = Pending()
        return pending, True

    def finish(self, key: CacheKey, pending: Pending, data: bytes | None) -> None:
        """Publish the owner's result (None: failed) to its waiters and keep it if it fits."""
        if self._pending.get(key) is pending:
            del self._pending[key]
        pending.data = data
        pending.done.set()
        if data is not None:
            self.put(key, data)
