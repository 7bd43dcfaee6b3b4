"""The embedded checkpoint store: a directory on local disk.

Layout under the root: ``blobs/<d[:2]>/<d>`` (tensor records, read-only files), ``checkpoints/<d>.json``
(manifests), ``tmp/`` (objects being written). Writes are crash-safe: bytes go to a temporary file in
``tmp/``, which is fsync'ed and then hard-linked to its final name — ``link`` fails if the name exists,
so two writers of the same bytes never clobber each other and a crash leaves at worst a stray temporary
file (removed when the store opens, once older than a day), never a half-written object under a final
name. Reads are verified: a blob is re-hashed before its first use by this process and again whenever
its inode, size or modification time changes (blobs are read-only and never rewritten in place, so a
change of bytes that keeps all three is bit rot the next process start catches); a mismatch moves it to
``corrupt/`` and raises BlobCorrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .base import READ_CHUNK, BlobCorrupt, StoreError, sha256_hex

STALE_TMP_SECONDS = 24 * 3600


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A checkpoint store in a directory (see the module docstring for layout and guarantees)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.description = f"local directory {self.root}"
        for sub in ("blobs", "checkpoints", "tmp", "corrupt"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._verified: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()
        self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        for path in (self.root / "tmp").iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def manifest_path(self, digest: str) -> Path:
        return self.root / "checkpoints" / f"{digest}.json"

    # -- writing ------------------------------------------------------------------------------------
    def writer(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    def _publish(self, temp: Path, final: Path) -> bool:
        """fsync'ed ``temp`` becomes ``final`` unless that exists already; True when it was created."""
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(temp, final)
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(final.parent)
        return True

    def put_manifest(self, digest: str, body: bytes) -> bool:
        final = self.manifest_path(digest)
        if final.exists():
            return False
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="manifest-")
        try:
            with os.fdopen(fd, "wb") as sink:
                sink.write(body)
                sink.flush()
                os.fsync(sink.fileno())
            os.chmod(name, 0o444)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return self._publish(Path(name), final)

    # -- reading ------------------------------------------------------------------------------------
    def get_manifest(self, digest: str) -> bytes | None:
        try:
            return self.manifest_path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def blob_length(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def verify(self, digest: str) -> None:
        """Re-hash the blob unless this process verified this very file before; BlobCorrupt on a mismatch."""
        path = self.blob_path(digest)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.description}") from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if self._verified.get(digest) == stamp:
                return
        hasher = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(READ_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != digest:
            self._quarantine(digest)
            raise BlobCorrupt(digest)
        with self._lock:
            self._verified[digest] = stamp

    def _quarantine(self, digest: str) -> None:
        with self._lock:
            self._verified.pop(digest, None)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.blob_path(digest), self.root / "corrupt" / f"{digest}.{time.time_ns()}")

    def read(self, digest: str, start: int, stop: int) -> Iterator[bytes]:
        self.verify(digest)
        with self.blob_path(digest).open("rb") as source:
            source.seek(start)
            remaining = stop - start
            while remaining > 0:
                chunk = source.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise StoreError(f"blob {digest} ended {remaining} bytes early")
                remaining -= len(chunk)
                yield chunk

    def read_all(self, digest: str) -> bytes:
        """The whole blob, hashed unless this process verified this very file (same inode, size and
        modification time) before — the same rule as :meth:`verify`."""
        path = self.blob_path(digest)
        try:
            with path.open("rb") as source:
                info = os.fstat(source.fileno())
                data = source.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.description}") from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            known = self._verified.get(digest) == stamp
        if not known:
            if sha256_hex(data) != digest:
                self._quarantine(digest)
                raise BlobCorrupt(digest)
            with self._lock:
                self._verified[digest] = stamp
        return data


class LocalBlobWriter:
    """Bytes to a temporary file in ``tmp/``, hashed as written; commit names it by its digest."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        fd, name = tempfile.mkstemp(dir=store.root / "tmp", prefix="blob-")
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hasher = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._file.write(data)

    def commit(self) -> tuple[str, bool]:
        digest = self._hasher.hexdigest()
        final = self.store.blob_path(digest)
        if final.exists():  # the common dedup case: skip the fsync of bytes we will not keep
            self.abort()
            return digest, False
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._path, 0o444)
        return digest, self.store._publish(self._path, final)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)
