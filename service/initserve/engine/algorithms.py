"""Algorithm versions. The bytes of a tensor are a function of (canonical spec, algorithm version).

1: the first release; orthogonal by the platform's LAPACK (reproducibility class ``numerical``).
2: orthogonal by the fixed-order blocked Householder QR of docs/determinism.md §7.1 (``bitwise``);
   every other scheme gives exactly the bytes of algorithm 1.

A spec selects its version with ``"algorithm"``; omitted, it gets the newest. The canonical form
writes ``algorithm`` only when it is not 1, so every canonical form, token, ETag and golden vector
made before versions were selectable still means what it meant: algorithm 1.
"""

from __future__ import annotations

ALGORITHM_VERSION = 2  # the newest: what a spec without "algorithm" gets
SUPPORTED_ALGORITHMS = (1, 2)
IMPLICIT_ALGORITHM = 1  # the version of a canonical form (token, metadata) that names none
