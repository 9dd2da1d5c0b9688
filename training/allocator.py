"""glibc malloc settings for a training process: a training step frees and reallocates the same
large buffers (gradients, optimizer temporaries, logits chunks) every step. With glibc's defaults
each one above its dynamic mmap threshold is a fresh mapping, and the freed top of the heap is
returned to the kernel, so every step page-faults its memory in again: on a 121k-item catalog
that was about 40% of the process's CPU time spent in the kernel."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed: blocks up to 32 MiB are served from the heap and reused
TRIM_THRESHOLD = 2**31 - 1  # (mallopt's largest) keep freed heap memory for the next step rather than give it back
TOP_PAD = 256 << 20  # grow the heap in large steps: fewer brk calls


def keep_freed_memory() -> bool:
    """Applies the settings to this process (Linux/glibc; elsewhere a no-op); True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(ctypes.c_int(option), ctypes.c_int(value)) == 1 for option, value in settings)
