"""JSON whose objects have unique keys: a repeated key is refused, never settled by "the last one wins".

RFC 8259 §4 leaves repeated names to the parser (first wins, last wins, or an error), so a document
with one means different things to different readers: ``{"shape": [2, 2], "shape": [3, 3]}`` is a
2×2 tensor to one and a 3×3 tensor to another. Every JSON a user sends (request bodies, tokens,
safetensors headers, which the format itself says must not repeat a key; the client's spec files)
is parsed by :func:`loads_unique`, which raises :class:`DuplicateKeyError` naming each repeated key
and the object holding it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .errors import Loc

# A document can repeat thousands of keys; an error names the first ones.
MAX_REPORTED = 10


@dataclass(frozen=True)
class RepeatedKey:
    """``key`` appears ``count`` times in the object at ``loc`` (a path from the document's root)."""

    loc: Loc
    key: str
    count: int

    @property
    def key_loc(self) -> Loc:
        """The path of the repeated field itself: the object's path and the key."""
        return (*self.loc, self.key)

    def rule(self, root: str) -> str:
        """``"key 'std' appears twice in body.params; …"``: the object's path from ``root`` (:func:`dotted`)."""
        times = "twice" if self.count == 2 else f"{self.count} times"
        where = dotted(root, self.loc)
        return f"key {self.key!r} appears {times} in {where}; a key may appear only once per object"


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key. ``repeats`` lists the first :data:`MAX_REPORTED`: objects in document
    order, an object's own repeated keys before those of the objects inside it."""

    def __init__(self, repeats: list[RepeatedKey], total: int) -> None:
        self.repeats = repeats
        self.total = total  # repeated keys found; may exceed len(repeats)
        super().__init__(self.describe(""))

    def describe(self, root: str) -> str:
        """Every reported repeat, objects named from ``root`` (``""``: paths from the document's root)."""
        more = f"; and {self.total - len(self.repeats)} more" if self.total > len(self.repeats) else ""
        return "; ".join(r.rule(root) for r in self.repeats) + more


class _Repeated(dict[str, Any]):
    """The object a hook built from pairs with repeated keys; ``counts`` keeps which and how often."""

    counts: dict[str, int]


def loads_unique(document: str | bytes, **kwargs: Any) -> Any:
    """:func:`json.loads` that raises :class:`DuplicateKeyError` when any object repeats a key.

    ``kwargs`` go to :func:`json.loads` (``parse_constant``, …). Malformed JSON raises what
    :func:`json.loads` raises. A valid document costs one ``dict(pairs)`` per object more than
    :func:`json.loads`; only a document with repeats is walked again, to find where they are.
    """
    repeated = False

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        built = dict(pairs)
        if len(built) == len(pairs):
            return built
        repeated = True
        marked = _Repeated(built)
        marked.counts = {key: n for key, n in Counter(key for key, _ in pairs).items() if n > 1}
        return marked

    value = json.loads(document, object_pairs_hook=unique, **kwargs)
    if repeated:
        found = _find_repeats(value)
        raise DuplicateKeyError(found[:MAX_REPORTED], len(found))
    return value


def _find_repeats(root: Any) -> list[RepeatedKey]:
    """Every repeated key under ``root``, objects in document order (iterative: the parser allows deep nesting)."""
    found: list[RepeatedKey] = []
    stack: list[tuple[Loc, Any]] = [((), root)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Repeated):
                found.extend(RepeatedKey(loc, key, n) for key, n in value.counts.items())
            stack.extend(((*loc, key), child) for key, child in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*loc, i), child) for i, child in reversed(list(enumerate(value))))
    return found


def dotted(root: str, loc: Loc) -> str:
    """``("body", ("params",))`` → ``body.params``, ``("body", ())`` → ``body``; without a root:
    ``params`` and ``the top-level object``."""
    text = root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.removeprefix(".") or "the top-level object"
