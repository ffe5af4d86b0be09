"""Segment server-side analytics for Django, Flask and Starlette/FastAPI.

Public API only; adapters live in ``segment_middleware.django``, ``.flask``, ``.asgi`` and
``.wsgi``. Importing this package needs nothing but ``segment-analytics-python``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .settings import Settings, SettingsError
from .tracker import Tracker, current
from .version import __version__

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .keywords import SettingsKeywords

__all__ = [
    "Settings",
    "SettingsError",
    "Tracker",
    "__version__",
    "aflush",
    "ashutdown",
    "configure",
    "current",
    "flush",
    "shutdown",
    "stats",
    "tracker",
]


def configure(**settings: Unpack[SettingsKeywords]) -> None:
    """Settings for a plain script or worker that sets up no framework.

    Keywords are the lowercase setting names; the environment fills the rest. Where a
    framework is set up (Django settings, a Flask app context, one configured app), its
    own settings win and this call is logged as ignored (``segment_middleware.ambient``).
    """
    from .ambient import configure as _configure

    _configure(settings)


def tracker(user_id: Any = None, anonymous_id: str | None = None) -> Tracker:
    """A tracker with no request context, for code that runs outside a request (shell,
    management commands, scripts, task workers). It sends with the framework's own
    settings where the framework is set up, else ``configure()``'s, else the environment's.
    """
    from .ambient import runtime

    return runtime().tracker(user_id=user_id, anonymous_id=anonymous_id)


def flush(timeout: float | None = None) -> bool:
    """Deliver everything queued so far; True when done, False if ``timeout`` ran out.

    Blocks the calling thread, also inside an event loop: async code awaits ``aflush()``.
    """
    from .pipelines import all_deliveries

    return all([d.flush(timeout) for d in all_deliveries()])


async def aflush(timeout: float | None = None) -> bool:
    """``flush()`` for async code: waits in a worker thread, never blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, flush, timeout)


def shutdown(timeout: float | None = None) -> None:
    """Flush within ``timeout`` (default SHUTDOWN_TIMEOUT) and spool what is left.

    Runs by itself at interpreter exit; call it yourself where exit hooks do not run.
    """
    from .pipelines import all_deliveries

    for delivery in all_deliveries():
        delivery.shutdown(timeout)


async def ashutdown(timeout: float | None = None) -> None:
    """``shutdown()`` for async code: waits in a worker thread, never blocking the event loop."""
    await asyncio.get_running_loop().run_in_executor(None, shutdown, timeout)


def stats() -> dict[str, int]:
    """Counts for this process: queued, delivered, stored, failed, dropped, spooled, retried,
    blocked, deferred, limited.

    ``queued`` = delivered + stored + failed + dropped + spooled + blocked + deferred + still
    in memory. ``stored``: written to the local store because there is no write key (not
    delivered anywhere); ``retried`` counts messages whose batch needed a retry; ``limited``
    the events the collection routes refused over COLLECT_RATE_LIMIT (never queued).
    """
    from .ledger import STAT_KEYS
    from .pipelines import all_deliveries

    total = dict.fromkeys(STAT_KEYS, 0)
    for delivery in all_deliveries():
        for key, value in delivery.stats().items():
            total[key] += value
    return total
