"""Counter-based random bits: one 64-bit word per tensor element, addressable by its index.

Key derivation (documented in docs/determinism.md):
    digest = SHA-256( b"initserve/v1" || 0x00 || seed as 8 bytes little-endian || UTF-8(name) )
    key    = digest[0:16] read as a little-endian 128-bit integer (Philox4x64 key words k0, k1)
Counter layout: element ``i`` of stream ``s`` is word ``i mod 4`` of the Philox4x64-10 block
computed for the 256-bit counter ``(i div 4) + s * 2**64`` (so ``c0 = i div 4``, ``c1 = s``).
Stream 0 gives the values; stream 1 gives the sparse scheme's zero-position keys; streams 2 and 3
give the row and column signs of ``hadamard_orthogonal`` (word r of stream 2 for row r, word c of
stream 3 for column c), so they never reuse a word of the values or the sparse mask.

numpy's ``Philox`` increments its counter *before* it computes a block, so to start at block ``b`` we
seed it with counter ``b - 1`` (mod 2**256). Only ``random_raw`` is used: the raw Philox output is
fixed by the Philox definition, unlike numpy's distribution methods.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

KEY_DOMAIN = b"initserve/v1"
WORDS_PER_BLOCK = 4
STREAM_VALUES = 0
STREAM_SPARSE_MASK = 1
STREAM_ROW_SIGNS = 2
STREAM_COL_SIGNS = 3


def derive_key(seed: int, name: str) -> int:
    """128-bit Philox key for the tensor identified by (seed, name)."""
    digest = hashlib.sha256(KEY_DOMAIN + b"\x00" + seed.to_bytes(8, "little") + name.encode("utf-8")).digest()
    return int.from_bytes(digest[:16], "little")


def raw_words(key: int, start: int, count: int, stream: int = STREAM_VALUES) -> npt.NDArray[np.uint64]:
    """The 64-bit words of elements ``start .. start+count-1`` (any start; cost O(count))."""
    return WordStream(key, start, stream).next(count)


class WordStream:
    """Consecutive element words from ``start`` on; one Philox instance reused across calls."""

    def __init__(self, key: int, start: int, stream: int = STREAM_VALUES) -> None:
        first_block, self._skip = divmod(start, WORDS_PER_BLOCK)
        counter = (first_block + (stream << 64) - 1) % (1 << 256)
        self._generator = np.random.Philox(key=key, counter=counter)

    def next(self, count: int) -> npt.NDArray[np.uint64]:
        if self._skip:
            self._generator.random_raw(self._skip)
            self._skip = 0
        words: npt.NDArray[np.uint64] = self._generator.random_raw(count)
        return words
