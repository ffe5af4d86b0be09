"""Deleting a user (GDPR art. 17, CCPA): at Segment, and everywhere this package keeps data.

:func:`delete_user` / :func:`delete_users` (and ``segment-middleware delete-user``) do two
things:

1. purge the users' messages here: the in-memory queue and the overflow handoff of this
   process's pipelines, and their rows in the local store, the spool and the deferred rows
   (the store file is shared by every process of the app). A user's messages are those of
   their userId and those of the anonymousIds seen with it (``erasure``);
2. file a ``SUPPRESS_WITH_DELETE`` regulation with Segment's Public API (PUBLIC_API_TOKEN,
   PUBLIC_API_HOST): Segment stops accepting their data and deletes what it holds, in
   batches of 5,000 userIds a call. Each regulation's id is returned and logged.

Without a write key nothing reached Segment, so with no PUBLIC_API_TOKEN either the purge
is the whole deletion; with a write key and no token nothing is done and
:class:`PrivacyError` says what is missing.

What cannot be recalled here: a batch a sender has already taken from the queue (posting,
or waiting to retry) is sent; the regulation deletes it at Segment. Should it fail, it is
not spooled: the process remembers whom it deleted and writes none of their messages to
disk again (``erasure``).

:func:`file_after` is the same deletion handed to a background thread, for hooks that run
inside a web request (Django's ``DELETE_ON_USER_DELETE``): the request does not wait on the
Public API, and deletions filed close together share one regulation.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .erasure import Subjects, remember
from .public_api import MAX_SUBJECT_IDS, PublicAPI, PublicAPIError, RegulationPage
from .settings import Settings
from .store import Store

__all__ = [
    "Deletion",
    "PrivacyError",
    "PublicAPIError",
    "delete_user",
    "delete_users",
    "file_after",
    "purge",
    "regulation",
    "regulations",
]

log = logging.getLogger("segment_middleware")


class PrivacyError(Exception):
    """A deletion cannot be filed as configured (no PUBLIC_API_TOKEN), or an id is unusable."""


@dataclass
class Deletion:
    """What a deletion did: the regulations filed (one per 5,000 userIds), the messages
    taken from memory and the rows deleted from the local store."""

    regulation_ids: list[str] = field(default_factory=list)
    messages: int = 0
    rows: int = 0


def delete_user(user_id: Any, *, settings: Settings | None = None) -> str | None:
    """Delete one user (see the module's docstring); the regulation's id, or None when
    there is no Segment to file it with (no write key, no PUBLIC_API_TOKEN)."""
    found = delete_users([user_id], settings=settings)
    return found.regulation_ids[0] if found.regulation_ids else None


def delete_users(user_ids: Iterable[Any], *, settings: Settings | None = None) -> Deletion:
    """Delete these users: purged here, then one regulation per 5,000 filed with Segment.

    ``settings``: default, the app's own (as ``segment_middleware.tracker()`` finds them).
    Raises :class:`PrivacyError` before doing anything when a write key is set but no
    PUBLIC_API_TOKEN; :class:`PublicAPIError` when Segment refuses or cannot be reached
    (its ``filed`` attribute lists the regulations filed before that, the purge is done).
    """
    ids = _checked(user_ids)
    s = settings if settings is not None else _settings()
    api = _api(s)
    result = Deletion()
    result.messages, result.rows = purge(ids, settings=s)
    if api is None:
        log.info(
            "segment: deleted %d user(s) from the local store (no write key: nothing was sent)", len(ids)
        )
        return result
    for start in range(0, len(ids), MAX_SUBJECT_IDS):
        batch = ids[start : start + MAX_SUBJECT_IDS]
        try:
            regulate_id = api.create_regulation(batch)
        except PublicAPIError as exc:
            exc.filed = list(result.regulation_ids)
            log.error(
                "segment: the deletion of %d user(s) was not filed (%s); %d regulation(s) filed before it",
                len(ids) - start,
                exc,
                len(result.regulation_ids),
            )
            raise
        result.regulation_ids.append(regulate_id)
        log.info(
            "segment: filed regulation %s (SUPPRESS_WITH_DELETE) for %d userId(s)", regulate_id, len(batch)
        )
    return result


def purge(user_ids: Iterable[Any], *, settings: Settings | None = None) -> tuple[int, int]:
    """Only the local half of a deletion: remove these users' messages from this process's
    pipelines and their rows from the local store (``settings``' and every pipeline's).
    Returns (messages taken from memory, rows deleted); the messages count as ``blocked``.

    Every holder is asked for the anonymousIds it saw with the users before any is purged,
    so each purges by the same set."""
    from .pipelines import all_deliveries

    ids = _checked(user_ids)
    s = settings if settings is not None else _settings()
    subjects = Subjects.of(ids)
    pipelines = all_deliveries()
    covered = {os.path.realpath(pipeline.store_path) for pipeline in pipelines}
    # The settings' store when no pipeline of this process writes it (the CLI's case).
    others = [] if os.path.realpath(s.local_store) in covered else [Store(s.local_store)]
    for pipeline in pipelines:
        pipeline.link(subjects)
    for store in others:
        subjects.anonymous_ids.update(store.linked_anonymous_ids(subjects.user_ids))
    remember(subjects)  # a batch in flight now is never written back to disk
    messages = rows = 0
    for pipeline in pipelines:
        taken, deleted = pipeline.purge(subjects)
        messages += taken
        rows += deleted
    for store in others:
        rows += store.purge(subjects.user_ids, subjects.anonymous_ids).rows
        store.close()
    if messages or rows:
        log.info(
            "segment: purged %d queued message(s) and %d stored row(s) of %d deleted user(s)",
            messages,
            rows,
            len(ids),
        )
    return messages, rows


def regulations(*, limit: int = 50, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The workspace's regulations, newest first as Segment lists them, up to ``limit``."""
    api = _api(settings if settings is not None else _settings(), required=True)
    assert api is not None
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(found) < limit:
        page: RegulationPage = api.list_regulations(min(limit - len(found), 100), cursor)
        found.extend(page.regulations)
        cursor = page.next_cursor
        if cursor is None or not page.regulations:
            break
    return found[:limit]


def regulation(regulate_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """One regulation, with its ``overallStatus``."""
    api = _api(settings if settings is not None else _settings(), required=True)
    assert api is not None
    return api.get_regulation(regulate_id)


# ---------------------------------------------------------------------- after commit
_outbox: queue.Queue[tuple[str, Settings]] = queue.Queue()
_filer: threading.Thread | None = None
_filer_lock = threading.Lock()
# Seconds the filer lets deletions gather before it files them (a transaction's commit
# runs its callbacks one after another) and then waits for more before it ends.
GATHER = 0.05


def _after_fork_in_child() -> None:
    """A forked child files its own deletions: the parent files what it queued, and its
    thread and lock are not the child's."""
    global _outbox, _filer, _filer_lock
    _outbox, _filer, _filer_lock = queue.Queue(), None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def file_after(user_id: Any, settings: Settings) -> None:
    """Delete a user on a background thread (a hook inside a request calls this once the
    deletion is committed). Failures are logged, never raised into the caller; the thread
    is not a daemon, so a process that exits finishes filing first."""
    global _filer
    item = (_checked([user_id])[0], settings)
    with _filer_lock:  # the filer ends under it only with the outbox empty: no item is left behind
        _outbox.put(item)
        if _filer is None:
            _filer = threading.Thread(target=_file_queued, name="segment-deletions", daemon=False)
            _filer.start()


def _file_queued() -> None:
    """Take what is queued (the deletions of one transaction arrive together) and file it,
    one call per settings and 5,000 ids; end when idle."""
    global _filer
    while True:
        try:
            first = _outbox.get(timeout=GATHER)
        except queue.Empty:
            with _filer_lock:
                if _outbox.empty():
                    _filer = None
                    return
            continue
        time.sleep(GATHER)  # let the rest of the commit's deletions in: one regulation for them
        batch = [first]
        while len(batch) < MAX_SUBJECT_IDS:
            try:
                batch.append(_outbox.get_nowait())
            except queue.Empty:
                break
        by_settings: dict[int, tuple[Settings, list[str]]] = {}
        for user_id, settings in batch:
            by_settings.setdefault(id(settings), (settings, []))[1].append(user_id)
        for settings, ids in by_settings.values():
            try:
                delete_users(ids, settings=settings)
            except Exception as exc:
                # The ids are personal data: not logged. The app's own records say whom it deleted.
                log.error(
                    "segment: could not file the deletion of %d deleted user(s) (%s: %s); "
                    "file it with `segment-middleware delete-user`",
                    len(ids),
                    type(exc).__name__,
                    exc,
                )


# ---------------------------------------------------------------------- helpers
def _checked(user_ids: Iterable[Any]) -> list[str]:
    """The ids as the userIds messages carry (strings), each once, in order."""
    from .tracker import checked_id

    if isinstance(user_ids, (str, bytes)):
        raise PrivacyError("user_ids: a list of userIds, not one string (delete_user takes one)")
    out: dict[str, None] = {}
    for value in user_ids:
        try:
            out[checked_id(value, "user_id")] = None
        except (TypeError, ValueError) as exc:
            raise PrivacyError(str(exc)) from None
    if not out:
        raise PrivacyError("no userId to delete")
    return list(out)


def _settings() -> Settings:
    from .ambient import runtime

    return runtime().settings


def _api(settings: Settings, *, required: bool = False) -> PublicAPI | None:
    """The Public API client, or None when there is nothing at Segment to delete (no write
    key) and no token; without a token while a write key is set, :class:`PrivacyError`."""
    if settings.public_api_token:
        return PublicAPI(settings.public_api_token, settings.public_api_host, timeout=settings.timeout)
    if settings.uses_store and not required:
        return None
    raise PrivacyError(
        "PUBLIC_API_TOKEN is not set (SEGMENT_PUBLIC_API_TOKEN): a Segment Public API token that may "
        "create regulations is needed to file or list deletions at Segment"
    )
