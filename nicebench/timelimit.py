"""A time limit on a block of Python code, for the per-cell limit (``cell_timeout``).

In the main thread the limit is a ``SIGALRM`` timer (``setitimer``) whose handler raises
:class:`CellTimeout`: it costs nothing while the block runs, leaves the process and its caches as
they were (so results stay bit-identical), and interrupts ``time.sleep``, blocking I/O and Python
loops. In another thread an asynchronous exception is set on that thread instead; it takes effect
at the thread's next Python bytecode (not inside a long ``time.sleep`` or native call; Ray runs
tasks in such a thread). Code that
never returns to the interpreter (a deadlock inside a native library) is not interrupted by either:
the Ray executor's driver-side limit, which stops the worker process, covers that case.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import signal
import threading
from collections.abc import Iterator

__all__ = ["CellTimeout", "time_limit"]


class CellTimeout(BaseException):  # noqa: N818 - named for what it reports
    """Raised inside a block whose time limit has passed. A ``BaseException``, so that a
    plugin's ``except Exception`` does not swallow it."""

    seconds_default: float = float("nan")  # set on the per-call subclass an async raise uses

    def __init__(self, seconds: float | None = None):
        self.seconds = self.seconds_default if seconds is None else seconds
        super().__init__(self.seconds)

    def __str__(self) -> str:
        return f"timed out after {self.seconds:g} s"


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the block when it runs longer than ``seconds`` (``None``,
    0 or inf: no limit)."""
    if not seconds or seconds <= 0 or math.isinf(seconds):
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _alarm(seconds):
            yield
    else:
        with _async_exception(seconds):
            yield


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum, frame):
        raise CellTimeout(seconds)

    old_handler = signal.signal(signal.SIGALRM, fire)
    old_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer[0]:  # an outer timer was running: let it go on
            signal.setitimer(signal.ITIMER_REAL, *old_timer)


@contextlib.contextmanager
def _async_exception(seconds: float) -> Iterator[None]:
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}
    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    # the interpreter instantiates the class without arguments: carry the limit on a subclass
    exc_type = type("CellTimeout", (CellTimeout,), {"seconds_default": seconds})

    def fire():
        with lock:
            if not state["done"]:
                state["fired"] = True
                set_exc(ctypes.c_ulong(tid), ctypes.py_object(exc_type))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            fired = state["fired"]
        if fired:  # set but maybe not delivered yet: clear it and raise here instead
            set_exc(ctypes.c_ulong(tid), None)
            raise CellTimeout(seconds)
