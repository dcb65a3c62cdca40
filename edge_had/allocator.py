"""Keep freed memory in the process instead of handing it back to the kernel at every ``free``.

Local RX (offline and in the line loop) works on temporaries of a few hundred kB to a few MB per
chunk or line. glibc's malloc serves blocks above its mmap threshold with a fresh ``mmap`` and
returns them with ``munmap``, and trims the heap top back to the kernel; every new temporary then
costs page faults on fresh zero pages (on the 2-core development machine half of the CPU time of
a cross-validation evaluation was system time). :func:`keep_freed_memory` raises both thresholds
with ``mallopt`` so that freed blocks are reused: offline local RX of a 100 x 100 x 64 cube ran
1.3-2x faster in A/B runs here (bench/README.md). The cost is that the process keeps its peak
heap: memory freed after a peak is not returned to the system (up to the trim threshold).

Called once by the ``edge-had`` command. glibc only (Linux, including JetPack); elsewhere it does
nothing. ``EDGE_HAD_KEEP_FREED_MEMORY=0`` turns it off (e.g. on an 8 GB Jetson sharing memory with
other processes). Between the stages of a scene, whose arrays differ in size and number (the
enhanced detectors' bands of lines, the spatial student, the scoring), :func:`release_freed_memory`
hands the freed pages back, so that one stage's garbage is not kept beside the next one's arrays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

ENV = "EDGE_HAD_KEEP_FREED_MEMORY"
MMAP_THRESHOLD_BYTES = 256 << 20  # blocks below this come from the heap, not from mmap
TRIM_THRESHOLD_BYTES = 512 << 20  # free memory at the heap top kept up to this
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True when they were set (False: not glibc, or
    turned off by ``EDGE_HAD_KEEP_FREED_MEMORY=0``)."""
    if os.environ.get(ENV, "1") in ("0", "false", "False", "no"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (musl has no mallopt effect)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def release_freed_memory() -> bool:
    """Hand the pages of freed memory back to the kernel now (glibc's ``malloc_trim``, in all of
    its arenas), whether or not :func:`keep_freed_memory` keeps them otherwise; True when it ran
    (glibc only). The enhanced detectors call it between the stages of a scene
    (:func:`edge_had.detectors.enhanced.free_working_memory`)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` (None elsewhere), looked up once: ``find_library`` runs
    ``ldconfig`` on Linux, and the enhanced detectors release memory up to three times a scene."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # (macOS's libc has none)
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim
