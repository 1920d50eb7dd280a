"""Process-wide settings. Only the entry points call these (xorrelu.__main__, xorrelu.resume):
library code never changes threads or the environment of the process it runs in."""

from __future__ import annotations

import getpass
import os
import tempfile
from pathlib import Path

import torch

_OUR_CACHE: str | None = None  # the inductor cache dir this process chose, if it chose one


def use_threads(threads: int) -> None:
    """Run torch on `threads` threads (0: leave PyTorch's default), and give compiled steps an
    inductor cache of their own for that count (see below)."""
    if threads > 0:
        torch.set_num_threads(threads)
    _inductor_cache_per_thread_count()


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
