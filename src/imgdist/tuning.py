"""Per-process settings for a process that runs the image job (engines, and the benchmark's
local baseline and peers, so they are compared on equal terms).

- One OpenCV thread: one image per core is the unit of parallelism; OpenCV's own threads
  would only contend with the other workers.
- glibc's allocator keeps freed memory instead of returning it to the kernel. By default a
  decoded 600x512 portrait (921 KB) can be handed back to the kernel as soon as it is freed,
  so the next decode takes ~420 fresh page faults; measured in an engine on the project's
  machine that was ~4.6 ms per image instead of ~3.3 ms. Memory is kept up to `TRIM_BYTES`
  free, and allocations below `MMAP_BYTES` (any image up to ~10 Mpx) come from that memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

import cv2

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 64 << 20
MMAP_BYTES = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit


@functools.cache
def tune_for_images() -> bool:
    """Set this process up for the image job, once; True if the allocator could be tuned.

    Elsewhere than glibc (macOS, musl) the allocator is left as it is.
    """
    cv2.setNumThreads(1)
    return _keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
    """Only the allocator part, for a process that moves image bytes but must keep OpenCV's
    threads (the main on the data route: measured, 36 page faults per image untuned, sys time
    0.31-0.44 ms per image; tuned, none and 0.13 ms)."""
    return _keep_freed_memory()


def _keep_freed_memory() -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(name)
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is not None and getattr(libc, "gnu_get_libc_version", None) is not None:
            return bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) and mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
            )
    return False
