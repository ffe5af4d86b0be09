"""The process around its pipelines: the registry, the exit flush, forks, the HTTP modules.

Each ``Delivery`` registers here when it is built. What concerns the whole process lives
here rather than in any one pipeline: the flush of every pipeline at exit (and at the exit
of a forked multiprocessing child), fork tracking, the SDK's log filter, the SDK's HTTP
session after a fork, and loading the HTTP modules at start-up.
"""

from __future__ import annotations

import gc
import logging
import sys
import weakref
from typing import TYPE_CHECKING, Protocol

from . import lifecycle
from .lifecycle import install_process_exit, track_forks
from .logs import sdk_log_filter

if TYPE_CHECKING:
    from .erasure import Subjects

__all__ = [
    "Pipeline",
    "all_deliveries",
    "install_process_hooks",
    "load_http",
    "register",
    "renew_sdk_session",
    "shutdown_all",
]

log = logging.getLogger("segment_middleware")


class Pipeline(Protocol):
    """What the process needs of a pipeline (``delivery.Delivery``)."""

    @property
    def shutdown_timeout(self) -> float: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> None: ...

    def stats(self) -> dict[str, int]: ...

    @property
    def store_path(self) -> str: ...

    def link(self, subjects: Subjects) -> None: ...

    def purge(self, subjects: Subjects) -> tuple[int, int]: ...


_registry: weakref.WeakSet[Pipeline] = weakref.WeakSet()  # type: ignore[type-var]


def register(pipeline: Pipeline) -> None:
    _registry.add(pipeline)


def all_deliveries() -> list[Pipeline]:
    """Every pipeline of this process still alive."""
    return list(_registry)


def shutdown_all(timeout: float | None = None) -> None:
    """Flush every pipeline within its SHUTDOWN_TIMEOUT, or ``timeout`` when that is
    shorter (at exit, before uvicorn re-raises, on Ctrl-C in Django's reloader child)."""
    for pipeline in list(_registry):
        try:
            own = pipeline.shutdown_timeout
            pipeline.shutdown(own if timeout is None else min(own, timeout))
        except Exception:  # pragma: no cover - never raise at exit
            log.exception("segment: error while flushing at exit")


_hooks_installed = False


def install_process_hooks() -> None:
    """Once per process, by its first pipeline (a forked child inherits them): the SDK log
    filter, fork tracking, and the flush at interpreter exit and at the exit of a forked
    multiprocessing child. Each step is idempotent, so two first pipelines made at once
    do no harm."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    logging.getLogger("segment").addFilter(sdk_log_filter)
    track_forks()
    install_process_exit(shutdown_all)


def load_http() -> None:
    """Load the sender's HTTP modules (urllib3, requests, the SDK) with the app, in the
    process that builds it (before a preloading server forks), never on the sender thread
    under traffic, where importing them would hold the GIL from requests.

    Their import leaves tens of thousands of long-lived objects, enough to make a full
    collection of the process due within seconds. So the first load is followed by one
    full collection, here at start-up, where that pause costs no request
    (bench/README.md); not when the app has turned the collector off."""
    if "segment_middleware.http" in sys.modules:
        return
    from . import http  # noqa: F401

    if gc.isenabled():
        gc.collect()


_session_generation = 0


def renew_sdk_session() -> None:
    """A forked child's first pipeline gives the SDK a new HTTP session: never the
    parent's sockets. The senders post through their own pools (``http.py``, renewed with
    the senders); the SDK's session is what ``segment-middleware check`` and the app's own
    SDK calls use. Called under ``lifecycle.fork_lock``."""
    global _session_generation
    if _session_generation == lifecycle.generation:
        return
    _session_generation = lifecycle.generation
    try:
        from requests import sessions
        from segment.analytics import request as sdk_request

        sdk_request._session = sessions.Session()
    except Exception:  # pragma: no cover - SDK layout changed; delivery still works
        pass
