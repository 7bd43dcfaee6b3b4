"""What the service needs from a checkpoint store, whatever holds the bytes.

A store keeps two kinds of immutable objects: **blobs**, tensor records named by the sha256 of their own
content (engine.checkpoint: ``record = prefix + raw bytes``, name = tensor digest), and **manifests**, the
canonical JSON of a checkpoint named by the checkpoint digest. Objects are written once, never changed,
and checked against their name when read, so a store that lost or garbled bytes says so instead of serving them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Protocol

READ_CHUNK = 1 << 20


class StoreError(Exception):
    """A store operation failed for a reason that is not the client's (I/O, the object store, corruption)."""


class BlobCorrupt(StoreError):
    """A stored object's bytes do not hash to its name; it has been set aside and must be uploaded again."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"stored object {digest} failed verification (its bytes do not hash to its name)")
        self.digest = digest


class BlobWriter(Protocol):
    """Receives one blob's bytes, hashing them as they come; :meth:`commit` names and keeps it."""

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self) -> tuple[str, bool]:
        """``(digest, created)``: created is False when the store already held those bytes (nothing new kept)."""
        ...

    def abort(self) -> None: ...


class Store(Protocol):
    description: str

    def writer(self) -> BlobWriter: ...

    def blob_length(self, digest: str) -> int | None:
        """The blob's length in bytes, or None when it is absent."""
        ...

    def read(self, digest: str, start: int, stop: int) -> Iterator[bytes]:
        """Bytes [start, stop) of a blob, verified as the backend documents; BlobCorrupt on a mismatch."""
        ...

    def read_all(self, digest: str) -> bytes:
        """The whole blob, verified against its digest before it is returned."""
        ...

    def put_manifest(self, digest: str, body: bytes) -> bool:
        """Keep a manifest; False when it was already there."""
        ...

    def get_manifest(self, digest: str) -> bytes | None: ...


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
