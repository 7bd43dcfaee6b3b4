"""Checkpoints as content: tensor records, tensor digests, checkpoint digests, upload headers.

Pure definitions (docs/pretrained.md, "Digests"), shared by the store, the derive engine and the client:

- A tensor's **record** is ``b"initserve-tensor/1 " + dtype + b" " + dims + b"\\n"`` followed by its raw
  little-endian bytes in C order, where ``dtype`` is the safetensors code (``F32``, ``BF16``, ``I64``, …)
  and ``dims`` the shape as decimal integers joined by ``,`` (empty for a scalar). The record is what the
  store keeps, so a blob's name is the sha256 of its own content.
- The **tensor digest** is ``sha256(record)`` in lowercase hex: the same dtype, shape and bytes give the same
  digest whatever the tensor is called and whichever file it came from.
- The **checkpoint digest** is ``sha256(b"initserve-checkpoint/1\\n" + canonical JSON of {name: tensor
  digest})`` (keys sorted, no spaces, ASCII escapes): a checkpoint is its named tensors; the file's layout
  and ``__metadata__`` do not enter it.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FieldError, SpecError
from .strict_json import DuplicateKeyError, loads_unique

RECORD_MAGIC = b"initserve-tensor/1"
CHECKPOINT_DOMAIN = b"initserve-checkpoint/1\n"
MAX_HEADER_BYTES = 100_000_000  # the safetensors reference implementation's limit
MAX_TENSOR_NAME = 1024
MAX_RANK = 8

# safetensors dtype code → (itemsize, kind): kind "float" takes part in derive arithmetic.
ST_DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (1, "bool"),
    "U8": (1, "int"),
    "I8": (1, "int"),
    "U16": (2, "int"),
    "I16": (2, "int"),
    "U32": (4, "int"),
    "I32": (4, "int"),
    "U64": (8, "int"),
    "I64": (8, "int"),
    "F16": (2, "float"),
    "BF16": (2, "float"),
    "F32": (4, "float"),
    "F64": (8, "float"),
    "F8_E4M3": (1, "float8"),
    "F8_E5M2": (1, "float8"),
}
# The dtype names of the JSON API (like torch's) ↔ safetensors codes.
DTYPE_CODES: dict[str, str] = {
    "float32": "F32",
    "float64": "F64",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}


def record_prefix(dtype: str, shape: Iterable[int]) -> bytes:
    """The bytes that precede a tensor's data in its record (and in its digest)."""
    dims = ",".join(str(int(d)) for d in shape)
    return RECORD_MAGIC + b" " + dtype.encode("ascii") + b" " + dims.encode("ascii") + b"\n"


def parse_record_prefix(blob_head: bytes) -> tuple[str, tuple[int, ...], int]:
    """``(dtype, shape, data offset)`` from the first bytes of a record; ValueError if it is not one."""
    end = blob_head.find(b"\n")
    if end < 0 or not blob_head.startswith(RECORD_MAGIC + b" "):
        raise ValueError("not an initserve tensor record")
    parts = blob_head[len(RECORD_MAGIC) + 1 : end].decode("ascii").split(" ")
    if len(parts) != 2 or parts[0] not in ST_DTYPES:
        raise ValueError("malformed tensor record prefix")
    shape = tuple(int(d) for d in parts[1].split(",")) if parts[1] else ()
    return parts[0], shape, end + 1


def tensor_digest(dtype: str, shape: Iterable[int], data: bytes | memoryview) -> str:
    """sha256 hex of the tensor's record (for data already in memory; the store hashes while streaming)."""
    hasher = hashlib.sha256(record_prefix(dtype, shape))
    hasher.update(data)
    return hasher.hexdigest()


def canonical_json(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def checkpoint_digest(tensors: Mapping[str, str]) -> str:
    """sha256 hex over the canonical ``{name: tensor digest}`` mapping."""
    return hashlib.sha256(CHECKPOINT_DOMAIN + canonical_json(dict(tensors)).encode("ascii")).hexdigest()


def is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def check_tensor_name(name: object) -> str | None:
    """None if ``name`` is acceptable, else the rule it breaks (any Unicode without control characters)."""
    if not isinstance(name, str) or not name:
        return "a tensor name must be a non-empty string"
    if len(name) > MAX_TENSOR_NAME:
        return f"a tensor name has at most {MAX_TENSOR_NAME} characters, got {len(name)}"
    if name == "__metadata__":
        return "'__metadata__' is reserved"
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        return "a tensor name must not contain control characters or lone surrogates"
    return None


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of an uploaded file: offsets relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    def prefix(self) -> bytes:
        return record_prefix(self.dtype, self.shape)


@dataclass(frozen=True)
class UploadLayout:
    """A validated safetensors header: tensors in data order and the file's total length."""

    header_length: int  # N, the JSON header's length (the data starts at 8 + N)
    tensors: tuple[TensorEntry, ...]
    metadata: Mapping[str, str]

    @property
    def data_start(self) -> int:
        return 8 + self.header_length

    @property
    def data_length(self) -> int:
        return self.tensors[-1].end if self.tensors else 0

    @property
    def total_length(self) -> int:
        return self.data_start + self.data_length


def header_length(first8: bytes) -> int:
    """N from the file's first 8 bytes; SpecError if it exceeds :data:`MAX_HEADER_BYTES`."""
    (size,) = struct.unpack("<Q", first8)
    if size > MAX_HEADER_BYTES or size < 2:
        raise SpecError([FieldError(("header",), f"header length must be 2..{MAX_HEADER_BYTES} bytes, got {size}")])
    return int(size)


def _int_list(value: object) -> list[int] | None:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return list(value)


def parse_upload_header(size: int, text: bytes) -> UploadLayout:
    """Validate a safetensors JSON header the way the reference implementation does, naming each problem:
    known dtypes, ``end − begin = numel · itemsize``, tensors tiling the data section without gaps or
    overlap, string metadata, acceptable names. Raises :class:`SpecError` (loc ``("header", name, field)``)."""
    try:
        header = loads_unique(text.decode("utf-8"))
    except DuplicateKeyError as exc:  # the format forbids it: two entries for one name are ambiguous
        raise SpecError([FieldError(("header", *r.key_loc), f"{r.rule('header')}") for r in exc.repeats]) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpecError([FieldError(("header",), f"the header is not valid UTF-8 JSON: {exc}")]) from None
    except RecursionError:  # a hostile header, e.g. 10,000 nested arrays: the parser's limit, not ours
        too_deep = "the header is not valid safetensors JSON: nested too deeply"
        raise SpecError([FieldError(("header",), too_deep)]) from None
    if not isinstance(header, dict):
        raise SpecError([FieldError(("header",), "the header must be a JSON object")])
    errors: list[FieldError] = []
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        errors.append(FieldError(("header", "__metadata__"), "__metadata__ must map strings to strings"))
        metadata = {}
    entries: list[TensorEntry] = []
    for name, entry in header.items():
        loc = ("header", name)
        problem = check_tensor_name(name)
        if problem:
            errors.append(FieldError(loc, problem))
            continue
        if not isinstance(entry, dict):
            errors.append(FieldError(loc, f"tensor {name!r}: entry must be an object"))
            continue
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in ST_DTYPES:
            errors.append(FieldError((*loc, "dtype"), f"dtype must be one of {', '.join(ST_DTYPES)}, got {dtype!r}"))
            continue
        shape = _int_list(entry.get("shape"))
        if shape is None or any(d < 0 for d in shape) or len(shape) > MAX_RANK:
            sent = json.dumps(entry.get("shape"))
            sent = sent if len(sent) <= 80 else sent[:77] + "…"  # a header may hold a million-item "shape"
            errors.append(FieldError((*loc, "shape"), f"shape must be 0-{MAX_RANK} integers ≥ 0, got {sent}"))
            continue
        offsets = _int_list(entry.get("data_offsets"))
        if offsets is None or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
            errors.append(FieldError((*loc, "data_offsets"), "data_offsets must be [begin, end] with 0 ≤ begin ≤ end"))
            continue
        need = math.prod(shape) * ST_DTYPES[dtype][0]
        if offsets[1] - offsets[0] != need:
            errors.append(
                FieldError(
                    (*loc, "data_offsets"),
                    f"data_offsets span {offsets[1] - offsets[0]} bytes but shape {shape} of {dtype} needs {need}",
                )
            )
            continue
        entries.append(TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1]))
    if errors:
        raise SpecError(errors)
    entries.sort(key=lambda e: (e.begin, e.end))
    cursor = 0
    for entry in entries:
        if entry.begin != cursor:
            msg = (
                f"tensor {entry.name!r} starts at data offset {entry.begin}, expected {cursor}: "
                "tensors must tile the data section without gaps or overlap"
            )
            raise SpecError([FieldError(("header", entry.name, "data_offsets"), msg)])
        cursor = entry.end
    return UploadLayout(size, tuple(entries), dict(metadata))
