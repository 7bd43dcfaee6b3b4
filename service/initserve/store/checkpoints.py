"""Checkpoints over a blob store: manifests (made, kept, verified) and tensor bytes by digest."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from initserve.engine.checkpoint import ST_DTYPES, canonical_json, checkpoint_digest, record_prefix
from initserve.engine.derive import ManifestTensor
from initserve.engine.magnitudes import Magnitude, magnitude

from .base import BlobCorrupt, Store
from .ingest import IngestResult


def manifest_of(result: IngestResult) -> dict[str, Any]:
    """The manifest of an ingested file: ``{"digest", "tensors": {name: {digest, dtype, shape, nbytes}}}``;
    F16, BF16, F32 and F64 tensors also give ``max_abs`` (largest finite |x|) and ``nonfinite`` (count of
    ±inf and NaN), the bounds derive checks target dtypes against. Neither enters the checkpoint digest."""
    tensors: dict[str, dict[str, Any]] = {}
    for entry in result.layout.tensors:
        body: dict[str, Any] = {
            "digest": result.digests[entry.name],
            "dtype": entry.dtype,
            "shape": list(entry.shape),
            "nbytes": entry.nbytes,
        }
        found = result.magnitudes.get(entry.name)
        if found is not None:
            body["max_abs"], body["nonfinite"] = found.max_abs, found.nonfinite
        tensors[entry.name] = body
    digest = checkpoint_digest({name: body["digest"] for name, body in tensors.items()})
    return {"digest": digest, "tensors": tensors}


class Checkpoints:
    """What the routes use: keep and read manifests, read tensors' raw bytes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def keep(self, manifest: dict[str, Any]) -> bool:
        """Store the manifest (after all its blobs); True when the checkpoint is new."""
        return self.store.put_manifest(manifest["digest"], canonical_json(manifest).encode("ascii"))

    def manifest(self, digest: str) -> dict[str, Any] | None:
        """The verified manifest, or None when the store has no such checkpoint."""
        body = self.store.get_manifest(digest)
        if body is None:
            return None
        manifest: dict[str, Any] = json.loads(body)
        tensors = manifest.get("tensors", {})
        if (
            manifest.get("digest") != digest
            or checkpoint_digest({n: t["digest"] for n, t in tensors.items()}) != digest
        ):
            raise BlobCorrupt(digest)
        return manifest

    @staticmethod
    def derive_view(manifest: dict[str, Any]) -> dict[str, ManifestTensor]:
        """What derive planning needs of a manifest. A manifest stored before manifests recorded
        ``max_abs``/``nonfinite`` leaves them None: :meth:`measure` computes them when a rule needs them."""
        view = {}
        for name, body in manifest["tensors"].items():
            found = None
            if isinstance(body.get("max_abs"), int | float) and isinstance(body.get("nonfinite"), int):
                found = Magnitude(float(body["max_abs"]), int(body["nonfinite"]))
            view[name] = ManifestTensor(body["dtype"], tuple(body["shape"]), body["digest"], found)
        return view

    def measure(self, tensor: ManifestTensor) -> Magnitude:
        """The magnitude of a float tensor from its verified bytes (for manifests that do not record it)."""
        return magnitude(tensor.dtype, self.tensor_bytes(tensor.digest))

    def tensor_bytes(self, digest: str) -> memoryview:
        """A tensor's raw bytes (its record without the prefix), verified; for derive."""
        record = self.store.read_all(digest)
        start = record.index(b"\n") + 1
        return memoryview(record)[start:]

    def tensor_stream(self, entry: dict[str, Any], start: int, stop: int) -> Iterator[bytes]:
        """Raw bytes [start, stop) of a manifest entry's tensor (offsets within the data, not the record)."""
        offset = len(record_prefix(entry["dtype"], entry["shape"]))
        return self.store.read(entry["digest"], offset + start, offset + stop)


def entry_nbytes(entry: dict[str, Any]) -> int:
    return math.prod(int(d) for d in entry["shape"]) * ST_DTYPES[str(entry["dtype"])][0]
