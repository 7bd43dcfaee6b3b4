"""From a validated request to a *target*: the engine object, its file, token, URL and ETag.

This is the only module that turns engine errors into HTTP problems: ``SpecError`` → 422
``invalid-spec`` and ``SpecTooLarge`` → 413 ``too-large``, each field's ``loc`` prefixed with
where it came from (``body`` or ``path, token``). Sizes are checked by the engine's
``parse_within``, pure integer arithmetic, before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from initserve.api.http_cache import strong_etag
from initserve.api.problems import Loc, ProblemError, field_path
from initserve.api.settings import Settings
from initserve.api.tokens import TENSORS_PATH, Kind, encode_token
from initserve.engine import (
    ALGORITHM_VERSION,
    BundleSpec,
    SafetensorsFile,
    Spec,
    SpecError,
    SpecTooLarge,
    parse_within,
)
from initserve.engine.spec import digest as spec_digest


@dataclass(frozen=True)
class TensorExtent:
    """Where one tensor's data lies in the file (absolute offsets) and what generates it."""

    name: str
    scheme: str
    itemsize: int
    start: int
    stop: int


@dataclass(frozen=True)
class Target:
    """A generatable file: a single spec (``t``) or a bundle (``b``)."""

    kind: Kind
    value: Spec | BundleSpec
    token: str
    url: str | None
    digest: str  # the engine's digest of the canonical JSON and algorithm (also the ETag's value)

    @cached_property
    def etag(self) -> str:
        return strong_etag(self.digest)

    @cached_property
    def file(self) -> SafetensorsFile:
        return SafetensorsFile(self.value)

    @property
    def length(self) -> int:
        return int(self.file.total_length)

    @property
    def algorithm(self) -> int:
        return self.value.algorithm

    @property
    def specs(self) -> tuple[Spec, ...]:
        return (self.value,) if isinstance(self.value, Spec) else tuple(self.value.tensors)

    @cached_property
    def extents(self) -> tuple[TensorExtent, ...]:
        """Tensor data extents, in file order: the engine's layout of the header it wrote (not the header
        parsed back, which cost a JSON decode per request)."""
        base = self.file.data_start
        return tuple(
            TensorExtent(
                entry.spec.name,
                entry.spec.scheme,
                entry.spec.dtype_info.itemsize,
                base + entry.begin,
                base + entry.end,
            )
            for entry in sorted(self.file.entries, key=lambda entry: entry.begin)
        )

    def resolved(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "url": self.url,
            "etag": self.etag,
            "content_length": self.length,
            "algorithm": self.algorithm,
            "canonical": self.value.canonical(),
        }


def _spec_problem(exc: SpecError, prefix: Loc) -> ProblemError:
    errors = [(tuple(prefix) + tuple(error.loc), error.msg) for error in exc.errors]
    detail = "; ".join(_render(loc, msg) for loc, msg in errors[:5]) or str(exc)
    if isinstance(exc, SpecTooLarge):
        return ProblemError(413, "too-large", detail, errors=errors)
    return ProblemError(422, "invalid-spec", detail, errors=errors)


def _render(loc: Loc, msg: str) -> str:
    path = field_path(loc)
    return msg if msg.startswith(path) else f"{path}: {msg}"


def build_target(
    kind: Kind,
    mapping: Mapping[str, Any],
    settings: Settings,
    prefix: Loc,
    *,
    default_algorithm: int = ALGORITHM_VERSION,
) -> Target:
    """Parse, bound and address ``mapping``; raise :class:`ProblemError` (422/413) naming the field.

    ``default_algorithm``: the version when ``mapping`` names none — the newest for a request body,
    1 for a token (a canonical form, which omits ``algorithm`` exactly when it is 1)."""
    if kind == "b":
        tensors = mapping.get("tensors")
        if isinstance(tensors, Mapping) and len(tensors) > settings.max_bundle_tensors:
            msg = f"a bundle holds at most {settings.max_bundle_tensors} tensors, got {len(tensors)}"
            raise ProblemError(413, "too-large", msg, errors=[((*prefix, "tensors"), msg)])
    try:
        value = parse_within(mapping, settings.max_bytes, bundle=kind == "b", default_algorithm=default_algorithm)
    except SpecError as exc:
        raise _spec_problem(exc, prefix) from exc
    canonical_json = value.canonical_json()
    token = encode_token(kind, canonical_json)
    url = TENSORS_PATH + token if len(token) <= settings.max_token_length else None
    return Target(kind, value, token, url, spec_digest(canonical_json, value.algorithm))
