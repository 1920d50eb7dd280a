"""Process-wide settings. Only the entry points call these (xorrelu.__main__, xorrelu.resume):
library code never changes threads or the environment of the process it runs in."""

from __future__ import annotations

import ctypes
import getpass
import os
import sys
import tempfile
from pathlib import Path

import torch

_OUR_CACHE: str | None = None  # the inductor cache dir this process chose, if it chose one


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets: the largest mmap
# threshold glibc accepts on 64 bits (HEAP_MAX_SIZE / 2), and a trim threshold of 1 GiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 1 << 30


def use_threads(threads: int) -> None:
    """Run torch on `threads` threads (0: leave PyTorch's default), give compiled steps an
    inductor cache of their own for that count (see below), and keep freed memory for reuse
    (keep_freed_memory). Every entry point calls this before it trains."""
    if threads > 0:
        torch.set_num_threads(threads)
    _inductor_cache_per_thread_count()
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MiB for the next allocation instead of
    handing them back to the kernel. A compiled step allocates all its buffers when it starts
    and frees them when it ends (at 1,000 replicas x 250 points, some twenty of 8 MB); with
    glibc's defaults those pages went back to the kernel after every step and were faulted in
    and zeroed again in the next one: ~11,600 page faults a step, and the fused step 1.7x
    slower (measured on one thread: 101 against 59 ms a step; the autograd engine, whose eager
    ops free and reuse blocks one at a time, was unchanged at 77 ms). The process then holds
    on to its peak memory. Numbers do not change. False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return False
    del version
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the trim threshold first: setting either one turns off glibc's own adjustment of both
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    )


def _inductor_cache_per_thread_count() -> None:
    """Inductor's on-disk cache does not key on the thread count, and a step compiled for one
    thread runs a two-thread job at about half speed (measured: 1.1M against 2.2M model-steps/s
    at 10,000 replicas). Keep one cache per thread count, unless the user chose a cache dir."""
    global _OUR_CACHE
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is not None and chosen != _OUR_CACHE:
        return
    _OUR_CACHE = str(
        Path(tempfile.gettempdir())
        / f"torchinductor_{getpass.getuser()}"
        / f"xorrelu_threads{torch.get_num_threads()}"
    )
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _OUR_CACHE
