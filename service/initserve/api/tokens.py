"""Stateless tensor URLs: ``/v1/tensors/{token}`` where the token *is* the canonical spec.

``token = kind + "." + base64url(canonical_json)`` without padding; ``kind`` is ``t`` for a
single-tensor spec and ``b`` for a bundle. Decoding is strict (alphabet, padding, UTF-8, a JSON
object) and every failure is an :class:`InvalidToken` — a client error, never a 500, whatever the
bytes (integers beyond Python's 4,300-digit limit and deep nesting included).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from initserve.engine.strict_json import DuplicateKeyError, loads_unique

Kind = Literal["t", "b"]
TENSORS_PATH = "/v1/tensors/"
_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


class InvalidToken(ValueError):
    """The token cannot be decoded into a JSON object; the message says which step failed."""


def encode_token(kind: Kind, canonical_json: str) -> str:
    payload = base64.urlsafe_b64encode(canonical_json.encode("utf-8")).rstrip(b"=")
    return f"{kind}.{payload.decode('ascii')}"


def tensor_url(kind: Kind, canonical_json: str) -> str:
    return TENSORS_PATH + encode_token(kind, canonical_json)


def _reject_constant(name: str) -> Any:
    raise InvalidToken(f"token payload contains the non-JSON number {name}")


def decode_token(token: str, max_length: int) -> tuple[Kind, dict[str, Any]]:
    """Return ``(kind, spec mapping)``; raise :class:`InvalidToken` naming the failed step, or
    :class:`~initserve.engine.strict_json.DuplicateKeyError` when an object of the payload repeats a key."""
    if len(token) > max_length:
        raise InvalidToken(f"token is {len(token)} characters long; the limit is {max_length}")
    kind, dot, payload = token.partition(".")
    if not dot or kind not in ("t", "b"):
        raise InvalidToken("token must start with 't.' (tensor) or 'b.' (bundle)")
    if not payload or not _ALPHABET.fullmatch(payload) or len(payload) % 4 == 1:
        raise InvalidToken("token payload must be unpadded base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidToken("token payload is not base64url-encoded UTF-8") from exc
    try:
        value = loads_unique(text, parse_constant=_reject_constant)
    except DuplicateKeyError:
        raise  # decodes, but ambiguously: the route answers 422 naming the keys, like a body's
    except RecursionError as exc:
        raise InvalidToken("token payload is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and the plain ValueError of an integer over 4,300 digits
        reason = "not valid JSON: an integer has more than 4,300 digits" if "digits" in str(exc) else "not valid JSON"
        raise InvalidToken(f"token payload is {reason}") from exc
    if not isinstance(value, dict):
        raise InvalidToken("token payload must be a JSON object")
    return ("t" if kind == "t" else "b"), value
