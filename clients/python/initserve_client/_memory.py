"""Memory for a body received without the cache: allocated once, its pages faulted in ahead of the socket.

Receiving 1 GiB into memory the process has never touched costs more than the receive itself: every
4 KiB page faults on its first write (measured on the 2-core VM: 0.23 s of CPU per GiB received into
a reused buffer, 0.8-1.0 s into a fresh ``bytearray`` or ``numpy.empty``). ``numpy.empty`` is worse
when numpy asks for transparent huge pages (2.5 s: each 2 MiB fault clears a huge page while the
socket waits). On Linux a private anonymous mapping is used instead, and a helper thread faults its
pages in ahead of the receiver with ``madvise(MADV_POPULATE_WRITE)`` — one system call per 32 MiB,
0.4 s per GiB, on the other core, with the GIL released — so the socket writes into pages that are
already there. Elsewhere (or on kernels without ``MADV_POPULATE_WRITE``) the pages fault on first
write as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import sys
import threading
from typing import Any

import numpy as np

__all__ = ["allocate_buffer"]

# Below this size faulting pages in place costs too little to be worth a thread.
PREFAULT_THRESHOLD = 16 << 20
_PREFAULT_STEP = 32 << 20
_MADV_POPULATE_WRITE = 23  # Linux ≥ 5.14; EINVAL on older kernels (then nothing is prefaulted)

_libc: Any = None


def _madvise() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        _libc = libc
    return _libc.madvise


def _prefault(mapping: mmap.mmap, size: int) -> None:
    """Fault the mapping's pages in, front to back (ctypes calls release the GIL)."""
    with contextlib.suppress(Exception):  # prefaulting is an optimisation: never fail the download
        madvise = _madvise()
        anchor = ctypes.c_char.from_buffer(mapping)  # the mapping's address; holds an export until we return
        try:
            address = ctypes.addressof(anchor)
            for offset in range(0, size, _PREFAULT_STEP):
                if madvise(address + offset, min(_PREFAULT_STEP, size - offset), _MADV_POPULATE_WRITE) != 0:
                    return
        finally:
            del anchor


def allocate_buffer(size: int) -> memoryview:
    """Writable memory for ``size`` bytes that will all be written (contents undefined until then)."""
    if sys.platform != "linux" or size < PREFAULT_THRESHOLD:
        return np.empty(size, dtype=np.uint8).data
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):
        mapping.madvise(mmap.MADV_NOHUGEPAGE)  # see the module docstring: huge-page faults stall the socket
    threading.Thread(target=_prefault, args=(mapping, size), name="initserve-prefault", daemon=True).start()
    return memoryview(mapping)
