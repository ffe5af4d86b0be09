"""A visitor carried from the request that enqueued a background job into the job.

The job runners' integrations (``segment_middleware.celery``, ``.rq``, Django's tasks)
put :func:`carry`'s dict into the job when it is enqueued (message headers, job meta) and
run the job inside :func:`running`, where ``current()`` is a tracker with the visitor's
userId, anonymousId and the context of the request (page, ip, user agent, locale,
campaign, consent), so the order-confirmation task's ``Order Completed`` belongs to the
same person and visit as the request's page call. A job makes no page call of its own.

What travels is plain JSON (strings, None, one dict of booleans), already redacted as the
page call would be (:func:`context.carried_facts`): a broker is somewhere else, and the
job may run on a worker of another release.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from .ambient import runtime
from .context import carried_facts, facts_from_carried
from .core import Runtime
from .tracker import CURRENT, Tracker, current

__all__ = ["KEY", "carry", "running"]

log = logging.getLogger("segment_middleware")

KEY = "segment"  # the name a job carries the visitor under (a header, a meta key)
VERSION = 1  # of the carried dict's shape; a job from a newer shape still runs, as nobody


def carry() -> dict[str, Any] | None:
    """The current request's visitor for a job enqueued now; None outside a tracked request
    (or inside a job enqueued outside one). Never raises: a failure is logged and the job
    goes without the visitor."""
    tracker = current()
    if tracker is None or not tracker.enabled or tracker.facts is None:
        return None
    try:
        # the settings of the app that tracked this request (its redaction, its proxies),
        # not necessarily those code outside a request would use
        owner = tracker.owner
        settings = owner.settings if isinstance(owner, Runtime) else runtime().settings
        return {
            "v": VERSION,
            "userId": tracker.user_id,
            "anonymousId": tracker.anonymous_id,
            "facts": carried_facts(tracker.facts, settings),
        }
    except Exception:
        log.exception("segment: could not carry the visitor into a job")
        return None


@contextlib.contextmanager
def running(carried: object) -> Iterator[Tracker | None]:
    """Run a job as the visitor ``carried`` (:func:`carry`'s dict, after its trip through
    the broker): ``current()`` is a tracker with those ids and that request's context in
    the block, and what it was before after it, also when the job raises. With nothing
    carried, or something that is not a carried visitor, ``current()`` is None (the
    latter is logged, without its values)."""
    tracker = None
    if carried is not None:
        try:
            tracker = _tracker(carried)
        except (TypeError, ValueError) as exc:
            log.warning("segment: a job's carried visitor is not usable (%s); current() is None in it", exc)
    token = CURRENT.set(tracker)
    try:
        yield tracker
    finally:
        CURRENT.reset(token)


def _tracker(carried: object) -> Tracker:
    if not isinstance(carried, Mapping):
        raise TypeError(f"expected a mapping, got {type(carried).__name__}")
    if carried.get("v") != VERSION:
        raise ValueError(f"unknown version {carried.get('v')!r:.20}")
    facts = carried.get("facts")
    if not isinstance(facts, Mapping):
        raise TypeError("facts must be a mapping")
    user_id, anonymous_id = carried.get("userId"), carried.get("anonymousId")
    if user_id is None and anonymous_id is None:
        raise ValueError("neither userId nor anonymousId")
    return runtime().tracker(user_id=user_id, anonymous_id=anonymous_id, facts=facts_from_carried(facts))
