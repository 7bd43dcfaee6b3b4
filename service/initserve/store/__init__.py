"""Checkpoint storage for pre-trained initialisation: a local directory (default) or an S3-compatible bucket.

The service opens one store from its settings (:func:`open_store`); everything else goes through
:class:`~initserve.store.checkpoints.Checkpoints`. See docs/pretrained.md ("Storage").
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from .base import BlobCorrupt, Store, StoreError
from .checkpoints import Checkpoints, manifest_of
from .ingest import Ingest, IngestResult

__all__ = ["BlobCorrupt", "Checkpoints", "Ingest", "IngestResult", "Store", "StoreError", "manifest_of", "open_store"]


def open_store(
    url: str,
    *,
    default_dir: Path,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Store:
    """``""`` → a local directory at ``default_dir``; ``file:///path`` or a plain path → that directory;
    ``s3://bucket/prefix`` → the bucket through boto3 (``endpoint_url`` for MinIO and friends)."""
    if not url:
        from .local import LocalStore

        return LocalStore(default_dir)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"an S3 store URL is s3://bucket[/prefix], got {url!r}")
        from .s3 import S3Store

        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    if parsed.scheme in ("", "file"):
        from .local import LocalStore

        return LocalStore(parsed.path if parsed.scheme == "file" else url)
    raise ValueError(f"store URL must be a directory, file:///dir or s3://bucket/prefix; got {url!r}")
