"""Which full-tensor elements make up a result: runs of consecutive flat indices, as arithmetic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class RunLayout:
    """The result of a slice as runs of consecutive full-tensor indices, described by arithmetic.

    Run ``r`` (0 ≤ r < ∏ extents) starts at ``base + Σ_d coord_d(r)·strides[d]``, ``coord(r)`` being
    ``r`` in the mixed radix of ``extents`` (last dimension fastest), and holds ``run_length``
    elements; no extents: one run from ``base``. Result element ``j`` is element ``j mod run_length``
    of run ``j div run_length``. O(rank) memory whatever the number of runs (a column slice of a
    (2^32, 2) tensor has 2^32 runs of one element).
    """

    base: int
    run_length: int
    extents: tuple[int, ...]
    strides: tuple[int, ...]

    def runs_from(self, start: int, count: int) -> Iterator[tuple[int, int]]:
        """(first full index, length) of the runs covering result elements start .. start+count-1."""
        if count <= 0:
            return
        if not self.extents:
            yield self.base + start, count
            return
        run, inside = divmod(start, self.run_length)
        coords = [0] * len(self.extents)
        for axis in range(len(self.extents) - 1, -1, -1):
            run, coords[axis] = divmod(run, self.extents[axis])
        while count > 0:
            first = self.base + inside + sum(c * s for c, s in zip(coords, self.strides, strict=True))
            n = min(self.run_length - inside, count)
            yield first, n
            count -= n
            inside = 0
            for axis in range(len(coords) - 1, -1, -1):  # next run: an odometer, last axis fastest
                coords[axis] += 1
                if coords[axis] < self.extents[axis]:
                    break
                coords[axis] = 0

    def full_indices(self, start: int, count: int) -> npt.NDArray[np.int64]:
        """The full-tensor index of each result element start .. start+count-1 (increasing), in
        vectorised integer arithmetic: O(count) memory, for short runs read from a covering range."""
        result = np.arange(start, start + count, dtype=np.int64)
        if not self.extents:
            result += self.base
            return result
        run, index = np.divmod(result, self.run_length)
        index += self.base
        for axis in range(len(self.extents) - 1, -1, -1):
            run, coord = np.divmod(run, self.extents[axis])
            index += coord * self.strides[axis]
        return index
