"""The process around the pipelines: exit flushes (also the exits that skip ``atexit``) and forks.

``atexit`` covers a normal interpreter exit, which is what gunicorn workers do on SIGTERM.
A process killed by SIGTERM's default action runs no Python at all, and uvicorn (0.29+)
ends that way on purpose: after its graceful shutdown it restores the SIGTERM handler it
found at start and re-raises the signal. So, where nobody handles SIGTERM yet, we install
a handler that flushes and then dies by the signal as before: uvicorn saves it as "the
original" and calls it at the very end, a plain script gets the same. Where uvicorn's
handler is already installed (the app was imported after it started serving), its list of
captured signals is swapped for one that flushes before it is re-raised. Any other
handler (gunicorn, Celery) is left alone: those exit normally and ``atexit`` runs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("segment_middleware")


class _FlushFirst(list):  # type: ignore[type-arg]
    """uvicorn's captured-signal list: iterating it in reverse (to re-raise) flushes first."""

    def __init__(self, items: list[int], before: Callable[[], None]) -> None:
        super().__init__(items)
        self._before = before

    def __reversed__(self) -> Iterator[int]:
        if len(self):
            try:
                self._before()
            except Exception:  # never stand in the way of the exit
                log.exception("segment: flush before re-raising the exit signal failed")
        return super().__reversed__()


def install_exit_flush(flush: Callable[[], None]) -> str:
    """Arrange for ``flush`` to run when SIGTERM ends the process; says what it did."""
    if threading.current_thread() is not threading.main_thread():
        return "not main thread"
    try:
        handler: Any = signal.getsignal(signal.SIGTERM)
        if handler is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _make_sigterm_handler(flush))
            return "sigterm handler"
        if getattr(handler, "_segment_flush", False):
            return "sigterm handler"
        return "uvicorn" if _hook_uvicorn(handler, flush) else "left alone"
    except Exception:  # pragma: no cover - e.g. signals unavailable in this interpreter
        return "failed"


def _make_sigterm_handler(flush: Callable[[], None]) -> Callable[[int, Any], None]:
    def on_sigterm(signum: int, frame: Any) -> None:
        try:
            flush()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    on_sigterm._segment_flush = True  # type: ignore[attr-defined]
    return on_sigterm


def _hook_uvicorn(handler: Any, flush: Callable[[], None]) -> bool:
    """Make a running uvicorn server flush before it re-raises SIGTERM/SIGINT."""
    try:
        server = getattr(handler, "__self__", None)
        if server is None or not type(server).__module__.startswith("uvicorn"):
            return False
        captured = getattr(server, "_captured_signals", None)
        if isinstance(captured, _FlushFirst) or not isinstance(captured, list):
            return isinstance(captured, _FlushFirst)
        server._captured_signals = _FlushFirst(captured, flush)
        return True
    except Exception:  # pragma: no cover - defensive: uvicorn internals changed
        return False


class _Anchor:
    """Kept alive for ``multiprocessing.util.register_after_fork`` (a weak registry)."""


_ANCHOR = _Anchor()


def install_process_exit(flush: Callable[[], None]) -> None:
    """Flush at interpreter exit, and at the exit of forked multiprocessing children.

    ``multiprocessing`` ends a forked child with ``os._exit`` (no ``atexit``) after running
    its own finalizers, and clears inherited finalizers first; so each child registers a
    finalizer of its own (``ProcessPoolExecutor`` workers, ``Pool`` workers, ``Process``).
    """
    import atexit
    import multiprocessing.util as mp_util

    atexit.register(flush)
    mp_util.register_after_fork(_ANCHOR, lambda _anchor: mp_util.Finalize(None, flush, exitpriority=100))


def install_interrupt_flush(flush: Callable[[], None]) -> bool:
    """Flush on SIGINT before the usual KeyboardInterrupt, where Python's default handler
    is still in place (main thread only). For Django's autoreloader: on Ctrl-C its parent
    waits 0.25 s for the serving child and then SIGKILLs it, too soon for a flush that
    waits for the interpreter's exit; ``flush`` must fit in that time (it spools the rest).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return False

        def on_sigint(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                flush()
            except Exception:  # never stand in the way of the interrupt
                log.exception("segment: flush on interrupt failed")
            signal.default_int_handler(signum, frame)

        signal.signal(signal.SIGINT, on_sigint)
        return True
    except Exception:  # pragma: no cover - signals unavailable in this interpreter
        return False


# ---------------------------------------------------------------------- forks
#: How many forks this process is away from the one that made its pipelines. The at-fork
#: hook only bumps it (and renews ``fork_lock``): each piece of state that must not cross a
#: fork (queues, threads, HTTP sessions, id pools) keeps the generation it was made in and
#: renews itself on its first use in the child, after the server's own set-up has run.
generation = 0
fork_lock = threading.Lock()  # serialises those renewals among the child's first threads
_tracking = False


def _forked_child() -> None:
    global generation, fork_lock
    generation += 1
    fork_lock = threading.Lock()  # the parent's may have been held by a thread that is gone


def track_forks() -> None:
    """Install the at-fork hook (once per process; a forked child inherits it)."""
    global _tracking
    if not _tracking:
        _tracking = True
        os.register_at_fork(after_in_child=_forked_child)
