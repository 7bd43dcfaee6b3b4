"""Tensor names in HTTP headers and log lines.

A name is any Unicode text without control characters (engine rule: ``spec.name_problem``), so it
can hold spaces, quotes, ``/`` or non-ASCII letters. Headers carry only ASCII: a file name is sent
as RFC 6266 ``Content-Disposition`` with an ASCII fallback (``filename=``, unsafe characters
replaced by ``_``) and the exact name in RFC 8187 ``filename*=UTF-8''<percent-encoded>``. The
random key still uses UTF-8(name) unchanged; only its rendering differs.
"""

from __future__ import annotations

from urllib.parse import quote

_FALLBACK_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-+[]()")


def ascii_filename(name: str) -> str:
    """An ASCII stand-in for ``name`` that is safe as a file name: no path separators, quotes or
    controls (each replaced by ``_``), never starting with a dot."""
    text = "".join(char if char in _FALLBACK_SAFE else "_" for char in name)
    return "_" + text[1:] if text.startswith(".") else text


def content_disposition(filename: str) -> str:
    """``attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>`` (RFC 6266, RFC 8187)."""
    return f"attachment; filename=\"{ascii_filename(filename)}\"; filename*=UTF-8''{quote(filename, safe='')}"
