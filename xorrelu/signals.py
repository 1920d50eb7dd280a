"""Stop signals: one handler for SIGINT, SIGTERM, SIGHUP and SIGUSR2, in three modes.

- "raise" (start-up, compiling, plotting): stop at once by raising Interrupted, so a Ctrl-C
  during imports or a 50 s torch.compile acts within a moment and prints no traceback.
- "defer" (the training loop): remember the first signal; the loop stops at the next step
  boundary and saves everything.
- "hold" (while saving): remember nothing new, say "saving..." and let the save finish; a
  second or fifth Ctrl-C cannot tear the checkpoint, the rows or the summary.

Only entry points (`python -m xorrelu`, `xorrelu.resume`) install the handler for the whole
process; `train()` installs it for its own duration when it runs without one (tests, notebooks)
and restores what was there before.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)
# 128 + signal number, as a shell reports it; SIGUSR2 (submitit's warning before preemption)
# exits like SIGTERM, which is what a scheduler's preemption is
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGUSR2: 143}


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt, so that code which cleans up after Ctrl-C
    cleans up after `kill` too."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 130)


class _State:
    mode = "raise"
    pending: int | None = None  # the first signal seen in "defer" or "hold" mode
    stopping = False  # a stop was asked for: later signals are only acknowledged
    first: int | None = None  # the signal that asked for it
    installed = False


_state = _State()


def _handle(signum, frame) -> None:
    if _state.stopping or _state.mode == "hold":
        name = signal.Signals(signum).name
        os.write(
            2,
            f"\n{name}: saving... "
            "(the results are being written; xorrelu stops by itself)\n".encode(),
        )
    if _state.stopping:
        return
    _state.stopping, _state.first = True, signum
    if _state.mode == "raise":
        raise Interrupted(signum)
    _state.pending = signum


def ignore_from_now_on() -> None:
    """At exit, once everything is saved: a late signal must not kill the interpreter while it
    shuts down (Python puts the default handlers back then, but leaves 'ignore' alone)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def install() -> None:
    """Route every stop signal to this module for the rest of the process (entry points only)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _handle)
        _state.installed = True


@contextmanager
def installed():
    """The handler for this block when no entry point installed it; the previous ones after."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in STOP_SIGNALS}
    _state.installed = True
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.installed, _state.stopping, _state.first, _state.pending = False, False, None, None


@contextmanager
def mode(name: str):
    """Handle signals in `name` mode ("raise", "defer" or "hold") inside this block."""
    before = _state.mode
    _state.mode = name
    try:
        yield
    finally:
        _state.mode = before


def requested() -> int | None:
    """The signal that asked this process to stop, if one did: an entry point exits with its
    code even when the Interrupted it raised was lost in a library's own cleanup."""
    return _state.first


def pending() -> int | None:
    """The first stop signal that arrived in "defer" or "hold" mode, if any."""
    return _state.pending


def take_pending() -> int | None:
    """pending(), and forget it (a resumed sweep's next job starts clean)."""
    signum, _state.pending = _state.pending, None
    return signum
