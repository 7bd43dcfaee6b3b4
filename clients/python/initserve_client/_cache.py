"""Content-addressed disk cache of safetensors files.

Layout under the root (default: the platform's user cache dir, or ``INITSERVE_CACHE_DIR``)::

    CACHEDIR.TAG                    so backup tools skip the cache
    v2/blobs/<digest>               the file bytes, named by their SHA-256 tree hash (see _treehash.py)
    v2/index/requests/<key>.json    request key (route + body)  -> etag, digest, size
    v2/index/etags/<etag>.json      server ETag (canonical spec) -> digest, size, url, tensors
    v2/locks/<etag>.lock            one lock per ETag, so concurrent processes download once
    v2/tmp/<random>.partial         downloads in progress (same filesystem as blobs/, for os.replace)

``v2`` is the layout version: layout 1 (``blobs/<plain sha256>`` directly under the root) is never
read; ``prune --all`` removes it.

Rules: every read hashes the blob and compares with its name before any byte is used (a mismatch
deletes the blob and its index entries, and the caller refetches); every write goes to a unique
temp file and is published with ``os.replace`` (atomic on POSIX and Windows); the lock is an
optimisation, never needed for correctness — two writers of the same blob write the same bytes
to different temp files and the second rename replaces the first with identical content.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from ._errors import CacheError
from ._treehash import tree_sha256

__all__ = ["BlobWriter", "Cache", "CacheEntry", "EtagLock", "VerifyReport"]

log = logging.getLogger("initserve_client.cache")

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by initserve_client.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_LOCK_LOG_INTERVAL = 10.0
LOCK_POLL_SECONDS = (0.005, 0.1)  # first and longest pause between attempts to take a busy lock
LAYOUT = "v2"
_LEGACY_DIRS = ("blobs", "index", "locks", "tmp")  # layout 1, directly under the root


def normalize_etag(etag: str) -> str:
    """``W/"abc"`` / ``"abc"`` → ``abc``, with anything unsafe in a file name replaced."""
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return _SAFE_NAME.sub("_", value.strip('"'))


@dataclass(frozen=True)
class CacheEntry:
    """What the index knows about one stored file."""

    etag: str
    digest: str  # SHA-256 tree hash of the file (_treehash.py): the blob's name
    size: int
    url: str | None = None
    tensors: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "tree_sha256": self.digest,
            "size": self.size,
            "url": self.url,
            "tensors": self.tensors,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheEntry:
        digest = str(data["tree_sha256"])
        if not _HEX64.match(digest):
            raise ValueError(f"bad tree_sha256 {digest!r}")
        return cls(str(data["etag"]), digest, int(data["size"]), data.get("url"), data.get("tensors"))


@dataclass(frozen=True)
class VerifyReport:
    ok: list[str]
    corrupted: list[str]


class BlobWriter:
    """A preallocated temp file to download into (``write_at`` = ``pwrite``); :meth:`commit` publishes it."""

    def __init__(self, cache: Cache, size: int) -> None:
        self._cache = cache
        self._size = size
        self.path = cache.layout_dir / "tmp" / f"{uuid.uuid4().hex}.partial"
        self._seek_lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            os.ftruncate(self._fd, size)
        except BaseException:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
            raise

    @property
    def size(self) -> int:
        return self._size

    def direct(self) -> None:
        """Never read straight into the file: ``pwrite`` of cached pieces beats faulting in a shared map."""
        return None

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if not hasattr(os, "pwrite"):  # Windows: no positional write; ranges share the file position
            with self._seek_lock:
                os.lseek(self._fd, offset, os.SEEK_SET)
                while view.nbytes:
                    view = view[os.write(self._fd, view) :]
            return
        while view.nbytes:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def mapped(self) -> memoryview:
        """The bytes written so far, memory-mapped read-only (to hash ranged downloads)."""
        if self._size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ))

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def commit(self, digest: str) -> Path:
        """Atomically move the file to ``blobs/<digest>``."""
        self._close()
        target = self._cache.blob_path(digest)
        os.replace(self.path, target)
        return target

    def abort(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)


def lock_pauses() -> Iterator[float]:
    """The pauses between attempts to take a busy lock: doubling from the first of
    :data:`LOCK_POLL_SECONDS` up to the longest, then that for ever."""
    pause, longest = LOCK_POLL_SECONDS
    while True:
        yield pause
        pause = min(2 * pause, longest)


class EtagLock:
    """A per-ETag file lock with a timeout; on timeout we proceed without it (see the module doc)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.timeout = timeout
        # thread_local=False: the async client acquires in a worker thread and releases on the loop.
        self._lock = filelock.FileLock(str(path), timeout=-1, thread_local=False, mode=0o664)
        self.held = False
        self._deadline: float | None = None  # of the wait in progress (try_acquire)
        self._next_log = 0.0

    def acquire(self) -> bool:
        """Wait for the lock (True) or until ``timeout`` (False: proceed without it), in this thread."""
        pauses = lock_pauses()
        while (state := self.try_acquire()) is None:
            time.sleep(next(pauses))
        return state

    def try_acquire(self) -> bool | None:
        """One attempt that never blocks: True (held), None (keep waiting), or False once ``timeout`` seconds
        have passed since the first attempt (proceed without it). The async client waits between attempts
        on its event loop: a waiter that blocked in a worker thread took a thread its own holder needed."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline, self._next_log = now + self.timeout, now + _LOCK_LOG_INTERVAL
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            if now < self._deadline:
                if now >= self._next_log:
                    log.info("still waiting for %s (another download of the same file)", self._lock.lock_file)
                    self._next_log = now + _LOCK_LOG_INTERVAL
                return None
            log.warning(
                "gave up waiting for %s after %.0f s; downloading without it", self._lock.lock_file, self.timeout
            )
            self._deadline = None
            return False
        self._deadline = None
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self._lock.release()
            self.held = False


class Cache:
    """The on-disk cache. Methods touch only the local filesystem; no network."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layout_dir = self.root / LAYOUT

    # -- layout -------------------------------------------------------------------------------------
    def ensure(self) -> None:
        try:
            for sub in ("blobs", "index/requests", "index/etags", "locks", "tmp"):
                (self.layout_dir / sub).mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                self._write_atomic(tag, CACHEDIR_TAG.encode())
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache at {self.root}: {exc}; set cache_dir= or "
                "INITSERVE_CACHE_DIR, or pass cache=False"
            ) from exc

    def blob_path(self, digest: str) -> Path:
        return self.layout_dir / "blobs" / digest

    def _request_path(self, key: str) -> Path:
        return self.layout_dir / "index" / "requests" / f"{key}.json"

    def _etag_path(self, etag: str) -> Path:
        return self.layout_dir / "index" / "etags" / f"{normalize_etag(etag)}.json"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- index --------------------------------------------------------------------------------------
    def _read_entry(self, path: Path) -> CacheEntry | None:
        try:
            return CacheEntry.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("discarding unreadable cache index entry %s", path)
            path.unlink(missing_ok=True)
            return None

    def lookup_request(self, key: str) -> CacheEntry | None:
        """The entry recorded for request ``key``; None if absent or recorded for another request."""
        path = self._request_path(key)
        try:
            stored = json.loads(path.read_bytes()).get("request_key")
        except (OSError, ValueError, AttributeError):
            stored = None
        if stored is not None and stored != key:
            log.warning("cache index entry %s was written for another request; discarding", path)
            path.unlink(missing_ok=True)
            return None
        return self._read_entry(path)

    def lookup_etag(self, etag: str) -> CacheEntry | None:
        return self._read_entry(self._etag_path(etag))

    def record(self, entry: CacheEntry, *, request_key: str | None = None) -> None:
        data = json.dumps(entry.to_json(), sort_keys=True).encode()
        self._write_atomic(self._etag_path(entry.etag), data)
        if request_key is not None:
            keyed = json.dumps({**entry.to_json(), "request_key": request_key}, sort_keys=True).encode()
            self._write_atomic(self._request_path(request_key), keyed)

    def forget_request(self, key: str) -> None:
        """Drop one request index entry (it pointed at a file that is not the request's answer)."""
        self._request_path(key).unlink(missing_ok=True)

    def forget(self, entry: CacheEntry, *, request_key: str | None = None) -> None:
        self.blob_path(entry.digest).unlink(missing_ok=True)
        self._etag_path(entry.etag).unlink(missing_ok=True)
        if request_key is not None:
            self._request_path(request_key).unlink(missing_ok=True)

    # -- blobs --------------------------------------------------------------------------------------
    def open_blob(self, entry: CacheEntry, *, verify: bool = True) -> memoryview | None:
        """Memory-map a blob copy-on-write (zero copy; writes to arrays never reach the file).

        With ``verify`` (always, for reads of stored data) the tree hash of the mapped bytes (its
        leaves hashed on up to four threads) is compared with the name first; a mismatch or wrong size
        deletes the blob and returns ``None``.
        """
        path = self.blob_path(entry.digest)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size != entry.size or size == 0:
                log.warning("cached blob %s has %d bytes, expected %d; discarding", path, size, entry.size)
                self.forget(entry)
                return None
            mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
        view = memoryview(mapped)
        if verify and tree_sha256(view) != entry.digest:
            log.warning("cached blob %s failed its SHA-256 tree hash check; discarding and refetching", path)
            view.release()
            mapped.close()
            self.forget(entry)
            return None
        with contextlib.suppress(OSError):
            os.utime(self._etag_path(entry.etag))  # last use, for `cache prune --older-than`
        return view

    def new_blob(self, size: int) -> BlobWriter:
        free = shutil.disk_usage(self.root).free
        if free < size:
            raise CacheError(
                f"the cache at {self.root} has {free} bytes free and this file needs {size}; "
                "free space, point INITSERVE_CACHE_DIR elsewhere, or pass cache=False"
            )
        return BlobWriter(self, size)

    def lock(self, etag: str, timeout: float) -> EtagLock:
        return EtagLock(self.layout_dir / "locks" / f"{normalize_etag(etag)}.lock", timeout)

    # -- maintenance (CLI `cache ls|verify|prune`) ---------------------------------------------------
    def entries(self) -> list[tuple[CacheEntry, float]]:
        """Every ETag entry with its last-use time, newest first."""
        out = []
        for path in sorted((self.layout_dir / "index" / "etags").glob("*.json")):
            entry = self._read_entry(path)
            if entry is not None:
                with contextlib.suppress(FileNotFoundError):
                    out.append((entry, path.stat().st_mtime))
        out.sort(key=lambda pair: pair[1], reverse=True)
        return out

    def verify_all(self) -> VerifyReport:
        """Tree-hash every blob (the rule reads use); corrupted ones (and their index entries) are deleted."""
        ok, bad = [], []
        for path in sorted((self.layout_dir / "blobs").glob("*")):
            if _file_tree_sha256(path) == path.name:
                ok.append(path.name)
            else:
                bad.append(path.name)
                path.unlink(missing_ok=True)
        self._drop_dangling()
        return VerifyReport(ok, bad)

    def _drop_dangling(self) -> int:
        dropped = 0
        for sub in ("requests", "etags"):
            for path in (self.layout_dir / "index" / sub).glob("*.json"):
                entry = self._read_entry(path)
                if entry is None or not self.blob_path(entry.digest).exists():
                    path.unlink(missing_ok=True)
                    dropped += 1
        return dropped

    def prune(self, *, older_than: float | None = None, everything: bool = False) -> int:
        """Remove entries unused for ``older_than`` seconds (or all), orphans and stale temp files.

        Returns the number of bytes freed. Temp files and orphan blobs younger than an hour are kept:
        they may belong to a download running right now. ``everything`` also removes layout 1.
        """
        now = time.time()
        freed = 0
        if everything:
            freed += self._remove_legacy()
        if older_than is not None or everything:
            for entry, last_used in self.entries():
                if everything or now - last_used > (older_than or 0.0):
                    path = self.blob_path(entry.digest)
                    with contextlib.suppress(FileNotFoundError):
                        freed += path.stat().st_size
                    self.forget(entry)
        self._drop_dangling()
        referenced = {e.digest for e, _ in self.entries()}
        for sub in ("blobs", "tmp"):
            for path in (self.layout_dir / sub).glob("*"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                stale = everything or now - stat.st_mtime > 3600
                if (sub == "tmp" or path.name not in referenced) and stale:
                    path.unlink(missing_ok=True)
                    freed += stat.st_size
        return freed

    def iter_blob_sizes(self) -> Iterator[int]:
        for path in (self.layout_dir / "blobs").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                yield path.stat().st_size

    def legacy_size(self) -> int:
        """Bytes held by an older cache layout under the root (never read; ``prune --all`` removes it)."""
        total = 0
        for name in _LEGACY_DIRS:
            for path in (self.root / name).rglob("*"):
                with contextlib.suppress(FileNotFoundError):
                    if path.is_file():
                        total += path.stat().st_size
        return total

    def _remove_legacy(self) -> int:
        freed = self.legacy_size()
        for name in _LEGACY_DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)
        return freed


def _file_tree_sha256(path: Path) -> str:
    """Tree hash of a file on disk, through a read-only mapping (no copy into Python objects)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return tree_sha256(b"")
        with mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return tree_sha256(view)
            finally:
                view.release()
