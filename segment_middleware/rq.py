"""RQ (1.16+, 2.x, 3.x): jobs enqueued during a request run as that request's visitor.

Two lines, one per side::

    Queue("default", connection=redis, job_class="segment_middleware.rq.Job")  # enqueue
    rq worker --worker-class segment_middleware.rq.Worker default             # worker

- :class:`Job`, when created (``Queue.enqueue``, ``enqueue_at``, ``@job``), puts the
  enqueuing request's visitor (``jobs.carry()``: userId, anonymousId and the request's
  context, already redacted) in its ``meta`` under ``jobs.KEY``; outside a request nothing
  is added. Its ``perform`` runs the function inside ``jobs.running(...)``: there
  ``segment_middleware.current()`` is a tracker with those ids and context, or None for a
  job enqueued outside a request, and afterwards what it was before, also when it raised.
- :class:`Worker` (and :class:`SimpleWorker`) use that Job class even where ``rq worker``
  passes its default ``--job-class rq.job.Job``. The work horse, a fork that ends with
  ``os._exit`` (no ``atexit``), calls ``segment_middleware.shutdown()`` after each job
  (flush within SHUTDOWN_TIMEOUT, spool the rest); it gets its own queue and sender after
  the fork (``lifecycle``). The worker itself flushes when its loop ends (SIGTERM, burst).

A project with its own Job subclass mixes :class:`CarryVisitor` into it.
"""

from __future__ import annotations

import logging
from typing import Any

import rq.job
import rq.worker
from rq.utils import import_attribute

from . import jobs

__all__ = ["CarryVisitor", "Job", "SimpleWorker", "Worker"]

log = logging.getLogger("segment_middleware")


class CarryVisitor:
    """Mix-in for an ``rq.job.Job`` subclass: carry the visitor at creation, run as it."""

    meta: dict[str, Any]

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> Any:
        job = super().create(*args, **kwargs)  # type: ignore[misc]
        if jobs.KEY not in job.meta:
            try:
                carried = jobs.carry()
            except Exception:  # never stand in the way of the enqueue
                log.exception("segment: could not read the visitor for an RQ job; it runs without one")
                carried = None
            if carried is not None:
                job.meta[jobs.KEY] = carried
        return job

    def perform(self) -> Any:
        with jobs.running(self.meta.get(jobs.KEY)):
            return super().perform()  # type: ignore[misc]


class Job(CarryVisitor, rq.job.Job):
    """``rq.job.Job`` that carries the enqueuing request's visitor (see the module doc)."""


def _job_class(given: Any) -> Any:
    """The Job class a worker uses: ours in place of RQ's default; a project's own class is
    kept (with a warning when it does not carry the visitor)."""
    cls = import_attribute(given) if isinstance(given, str) else given
    if cls is None or cls is rq.job.Job:
        return Job
    if isinstance(cls, type) and not issubclass(cls, CarryVisitor):
        log.warning(
            "segment: RQ job class %s does not carry the visitor; mix in segment_middleware.rq.CarryVisitor",
            cls.__qualname__,
        )
    return cls


class _FlushingWorker:
    """What both worker classes add: our Job class, and a flush where the process ends."""

    _is_horse: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["job_class"] = _job_class(kwargs.get("job_class"))
        super().__init__(*args, **kwargs)

    def perform_job(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().perform_job(*args, **kwargs)  # type: ignore[misc]
        finally:
            if getattr(self, "_is_horse", False):  # the horse ends with os._exit next
                _shutdown("work horse")

    def work(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().work(*args, **kwargs)  # type: ignore[misc]
        finally:
            _shutdown("worker")


def _shutdown(where: str) -> None:
    from . import shutdown

    try:
        shutdown()
    except Exception:  # never stand in the way of the job's bookkeeping or the exit
        log.exception("segment: flush at the end of the RQ %s failed", where)


class Worker(_FlushingWorker, rq.worker.Worker):
    """``rq.worker.Worker`` (a forked work horse per job) for ``rq worker --worker-class``."""


class SimpleWorker(_FlushingWorker, rq.worker.SimpleWorker):
    """``rq.worker.SimpleWorker`` (jobs in the worker process itself)."""
