"""Process-wide taps on every pipeline's queue: a test's capture and the debug panel's watch.

``testing.capture()`` hands each message, built as the sender would build it, to a sink
instead of queueing it; the django-debug-toolbar panel sees the calls its request made
while they are delivered as usual. Both are read by ``Delivery.put`` on every call, so each
is one module attribute that is None or 0 when unused.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .messages import Queued
    from .settings import Settings

__all__ = ["Watched", "capture_sink", "set_capture", "watch", "watchers", "watching"]

#: ``testing.capture()``'s sink, or None: every pipeline hands its messages to it.
capture_sink: Callable[[dict[str, Any]], None] | None = None


def set_capture(sink: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None] | None:
    """Hand every message of every pipeline to ``sink`` instead of queueing it (None:
    deliver again); returns the previous sink. For ``testing.capture()``."""
    global capture_sink
    previous, capture_sink = capture_sink, sink
    return previous


class Watched(NamedTuple):
    """A call seen by :func:`watch`, with the settings of the pipeline it went to."""

    item: Queued
    settings: Settings


watchers: contextvars.ContextVar[list[Watched] | None] = contextvars.ContextVar("segment_watch", default=None)
watching = 0  # watch() blocks open in the process: put() reads the context only when > 0
_watching_lock = threading.Lock()


@contextlib.contextmanager
def watch() -> Iterator[list[Watched]]:
    """Every call queued in this context (a request) while the block runs, as well as
    being delivered: for the django-debug-toolbar panel."""
    global watching
    seen: list[Watched] = []
    token = watchers.set(seen)
    with _watching_lock:
        watching += 1
    try:
        yield seen
    finally:
        watchers.reset(token)
        with _watching_lock:
            watching -= 1
