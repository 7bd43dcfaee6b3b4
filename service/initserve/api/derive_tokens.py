"""Stateless URLs of derived models: ``/v1/derived/d.<token>``, the token being the canonical request.

``token = "d." + base64url(zlib.compress(canonical JSON, 9))`` without padding. A derive request lists
every tensor of the target model, so its JSON runs to kilobytes; its names repeat prefixes, and deflate
shrinks it 5–10×, which keeps the URLs of real models under ``INITSERVE_MAX_TOKEN_LENGTH``. The bytes of
a derived file depend on the canonical request only (its ETag is computed from it, not from the token):
two zlib builds that deflate differently give two URLs for the same bytes, never different bytes.
Decoding is strict and bounded (at most :data:`MAX_JSON_BYTES` inflated) and every failure is an
:class:`InvalidDeriveToken`, a client error.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from typing import Any

from initserve.engine.strict_json import DuplicateKeyError, loads_unique

PREFIX = "d."
MAX_JSON_BYTES = 4 << 20
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class InvalidDeriveToken(ValueError):
    """The token does not decode to a JSON object; the message says which step failed."""


def encode_token(canonical_json: str) -> str:
    packed = zlib.compress(canonical_json.encode("utf-8"), 9)
    return PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def decode_token(token: str, max_length: int) -> dict[str, Any]:
    if len(token) > max_length:
        raise InvalidDeriveToken(f"token is {len(token)} characters long; the limit is {max_length}")
    payload = token[len(PREFIX) :]
    if not token.startswith(PREFIX) or not _ALPHABET.fullmatch(payload) or len(payload) % 4 == 1:
        raise InvalidDeriveToken("a derive token is 'd.' + unpadded base64url (A-Z a-z 0-9 - _)")
    try:
        packed = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_JSON_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise InvalidDeriveToken(
                f"token payload is not a complete deflate stream of at most {MAX_JSON_BYTES} bytes"
            )
        value = loads_unique(raw.decode("utf-8"))
    except (InvalidDeriveToken, DuplicateKeyError):  # a repeated key: the route answers 422 naming it
        raise
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidDeriveToken("token payload is not base64url-encoded, deflated JSON") from exc
    if not isinstance(value, dict):
        raise InvalidDeriveToken("token payload must be a JSON object")
    return value
