"""Celery (5.3+): tasks enqueued during a request run as that request's visitor.

One line in the module that makes the Celery app (both the web processes, which enqueue,
and the worker import it)::

    import segment_middleware.celery

    segment_middleware.celery.install()

What it connects, all through Celery's signals (no task base class to inherit):

- ``before_task_publish``: the enqueuing request's visitor (``jobs.carry()``: userId,
  anonymousId and the request's context, already redacted) goes into the message headers
  under ``jobs.KEY``. Outside a request nothing is added, and a header already there (a
  retry re-publishing its own request's headers) is kept.
- ``task_prerun`` / ``task_postrun``: the task body runs inside ``jobs.running(carried)``,
  so ``segment_middleware.current()`` is a tracker with those ids and context, or None for
  a task enqueued outside a request; afterwards it is what it was before. The entered
  block is kept per task id because the two signals are separate calls; ``task_postrun``
  is sent also when the task raised. Eager tasks (``task.apply()``, ``task_always_eager``)
  are left alone: they run inside the caller, whose ``current()`` is already right.
- ``worker_process_shutdown`` (each prefork child, which ends with ``os._exit`` and so
  runs no ``atexit``) and ``worker_shutdown`` (the main process: solo and thread pools):
  ``segment_middleware.shutdown()``, which flushes within SHUTDOWN_TIMEOUT and spools the
  rest. A prefork child gets its own queue and sender after the fork (``lifecycle``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from celery import signals

from . import jobs

__all__ = ["install"]

log = logging.getLogger("segment_middleware")

_UID = "segment_middleware.celery."
_running: dict[str, contextlib.AbstractContextManager[Any]] = {}  # task id -> its entered block
_lock = threading.Lock()  # thread pools run several tasks at once
_installed = False


def install() -> None:
    """Connect the signals (idempotent: a second call, or a second import path, adds nothing)."""
    global _installed
    if _installed:
        return
    # weak=False: the receivers are module functions, but a weak reference to a function
    # of a module that gets reloaded would silently disconnect.
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=_UID + "publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=_UID + "prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=_UID + "postrun")
    signals.worker_process_shutdown.connect(_on_shutdown, weak=False, dispatch_uid=_UID + "process_shutdown")
    signals.worker_shutdown.connect(_on_shutdown, weak=False, dispatch_uid=_UID + "shutdown")
    _installed = True


def _on_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None or jobs.KEY in headers:
        return
    try:
        carried = jobs.carry()
    except Exception:  # never stand in the way of the enqueue
        log.exception("segment: could not read the visitor for a Celery task; it runs without one")
        return
    if carried is not None:
        headers[jobs.KEY] = carried


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if task_id is None or request is None or getattr(request, "is_eager", False):
        return
    block = jobs.running(getattr(request, jobs.KEY, None))
    block.__enter__()
    with _lock:
        previous = _running.pop(task_id, None)
        _running[task_id] = block
    if previous is not None:  # a task id run twice in one process without its postrun
        _leave(previous)


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    with _lock:
        block = _running.pop(task_id, None) if task_id is not None else None
    if block is not None:
        _leave(block)


def _leave(block: contextlib.AbstractContextManager[Any]) -> None:
    try:
        block.__exit__(None, None, None)
    except Exception:  # e.g. left from another context than it was entered in
        log.exception("segment: could not restore the tracker after a Celery task")


def _on_shutdown(**_: Any) -> None:
    from . import shutdown

    try:
        shutdown()
    except Exception:  # never stand in the way of the worker's exit
        log.exception("segment: flush at Celery worker shutdown failed")
