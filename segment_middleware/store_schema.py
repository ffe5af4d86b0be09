"""The store's table, its version, and the migration that brings an older file to it.

The version is SQLite's ``PRAGMA user_version``, written in the same transaction as the
change it names:

- 0: the layout of 0.1.0 (never set, as SQLite starts it), where one ``replayed_at``
  column meant three things: NULL waiting, negative the claim of a pid, positive the time
  it was sent (or rejected).
- 1: a row's state is a column of its own (``waiting``, ``claimed``, ``sent``,
  ``rejected``); a claim names its owner (``claims.token``) in ``claimed_by``; the time a
  row left the queue is ``settled_at``.

A file is brought up to date under SQLite's write lock (``BEGIN IMMEDIATE``), reading the
version again once the lock is held: of several processes opening an old file at once,
one migrates and the others wait for it, then find the new version and change nothing.
A process running older code cannot use a migrated file; upgrades stop the old processes
first.
"""

from __future__ import annotations

import logging
import sqlite3

from .claims import LEGACY_PREFIX

__all__ = ["CLAIMED", "COLUMNS", "REJECTED", "SENT", "VERSION", "WAITING", "NewerStoreError", "ensure"]

log = logging.getLogger("segment_middleware")

VERSION = 1

WAITING = "waiting"  # nobody holds it: the next claimer takes it
CLAIMED = "claimed"  # ``claimed_by`` is sending it (or holds it, for its deferred rows)
SENT = "sent"  # accepted by the endpoint at ``settled_at``
REJECTED = "rejected"  # refused by the endpoint (400) at ``settled_at``; ``error`` says why

#: Every column, in the order of ``StoredEvent``'s fields: rows are read by these names.
COLUMNS = (
    "id",
    "message_id",
    "kind",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "stored_at",
    "state",
    "claimed_by",
    "claimed_at",
    "settled_at",
    "error",
    "body",
)

_TABLE = f"""
CREATE TABLE {{name}} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT,
    user_id TEXT,
    anonymous_id TEXT,
    timestamp TEXT,
    stored_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT '{WAITING}'
        CHECK (state IN ('{WAITING}', '{CLAIMED}', '{SENT}', '{REJECTED}')),
    claimed_by TEXT,
    claimed_at REAL,
    settled_at REAL,
    error TEXT,
    body TEXT NOT NULL,
    CHECK ((state = '{CLAIMED}') = (claimed_by IS NOT NULL)),
    CHECK ((state IN ('{SENT}', '{REJECTED}')) = (settled_at IS NOT NULL))
)
"""

_INDEXES = (
    "CREATE INDEX events_state ON events (state, id)",
    "CREATE INDEX events_claimed ON events (claimed_by, kind, id) WHERE claimed_by IS NOT NULL",
    "CREATE INDEX events_user ON events (user_id)",
    "CREATE INDEX events_message ON events (message_id)",
)

# Version 0's rows, by what their ``replayed_at`` meant. A row replay marked rejected kept
# the reason replay.py writes; any other positive mark was a send.
_FROM_V0 = f"""
INSERT INTO events_v1 ({", ".join(COLUMNS)})
SELECT id, message_id, kind, type, event, user_id, anonymous_id, timestamp, stored_at,
    CASE
        WHEN replayed_at IS NULL THEN '{WAITING}'
        WHEN replayed_at < 0 THEN '{CLAIMED}'
        WHEN error LIKE 'rejected by the endpoint%' THEN '{REJECTED}'
        ELSE '{SENT}'
    END,
    CASE WHEN replayed_at < 0 THEN '{LEGACY_PREFIX}' || CAST(CAST(-replayed_at AS INTEGER) AS TEXT) END,
    NULL,
    CASE WHEN replayed_at > 0 THEN replayed_at END,
    error, body
FROM events ORDER BY id
"""


class NewerStoreError(RuntimeError):
    """The file was written by a newer version of the package, in a layout this one does not know."""


def ensure(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file behind ``conn`` (autocommit mode) to ``VERSION``."""
    if _version(conn) == VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn)
        if found > VERSION:
            raise NewerStoreError(
                f"the store {path} has schema version {found}, newer than this segment-middleware's "
                f"({VERSION}): upgrade the package, or point LOCAL_STORE at another file"
            )
        if found < VERSION:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            if not columns:
                _create(conn)
            elif found == 0 and "replayed_at" in columns:
                _migrate_v0(conn)
                log.info("segment: migrated the store %s from schema version 0 to %d", path, VERSION)
            else:
                raise NewerStoreError(f"the store {path} has an events table of an unknown layout")
            conn.execute(f"PRAGMA user_version = {VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _create(conn: sqlite3.Connection) -> None:
    conn.execute(_TABLE.format(name="events"))
    for statement in _INDEXES:
        conn.execute(statement)


def _migrate_v0(conn: sqlite3.Connection) -> None:
    """Rebuild the table in the new layout (SQLite cannot change a column's meaning in
    place), keeping every row's id and the id sequence, so ids are never reused."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    sequence = int(row[0]) if row else 0
    conn.execute(_TABLE.format(name="events_v1"))
    conn.execute(_FROM_V0)
    conn.execute("DROP TABLE events")  # and its version 0 indexes
    conn.execute("ALTER TABLE events_v1 RENAME TO events")
    for statement in _INDEXES:
        conn.execute(statement)
    updated = conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'events'", (sequence,)
    ).rowcount
    if not updated and sequence:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (sequence,))
