"""The embedded SQLite store: every message when there is no write key, plus the spool.

One file, WAL mode, so several worker processes and the CLI can write and read at once.
Only the sender thread (and the CLI) touch it: never the request path.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .messages import Encoded

__all__ = ["LOCAL", "SPOOL", "Store", "StoredEvent"]

_ROW_SLOTS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_INSERT = 90  # 10 parameters a row, under SQLite's old 999-parameter limit

LOCAL = "local"  # recorded because no write key is set
SPOOL = "spool"  # delivery failed; waiting for `replay`

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT,
    user_id TEXT,
    anonymous_id TEXT,
    timestamp TEXT,
    stored_at REAL NOT NULL,
    replayed_at REAL,
    error TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_pending ON events (replayed_at, id);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id);
"""


@dataclass(frozen=True)
class StoredEvent:
    id: int
    message_id: str
    kind: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: str | None
    stored_at: float
    replayed_at: float | None
    error: str | None
    body: str

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class Store:
    """A thread-safe handle on the store file; opened on first use, per process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited across fork must not be used (or closed) by the child.
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        with contextlib.suppress(sqlite3.OperationalError):  # another process is switching it now
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ writing
    def insert(self, rows: Iterable[Encoded], kind: str, error: str | None = None) -> int:
        """Store encoded messages in one transaction; returns how many."""
        now = time.time()
        values = [_columns(row.message, row.body, kind, now, error) for row in rows]
        if not values:
            return 0
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                # One multi-row INSERT per chunk: executemany releases the GIL per row, which
                # makes a spool write crawl when request threads keep the GIL busy.
                for start in range(0, len(values), _ROWS_PER_INSERT):
                    chunk = values[start : start + _ROWS_PER_INSERT]
                    conn.execute(
                        "INSERT INTO events (message_id, kind, type, event, user_id, anonymous_id, timestamp,"
                        " stored_at, error, body) VALUES " + ",".join([_ROW_SLOTS] * len(chunk)),
                        [field for row in chunk for field in row],
                    )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(values)

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = time.time()
        with self._lock:
            conn = self._connect()
            conn.executemany("UPDATE events SET replayed_at = ? WHERE id = ?", [(now, i) for i in ids])

    def mark_rejected(self, ids: Iterable[int], error: str) -> None:
        """Rows the endpoint refused (400): no longer pending, the reason kept beside them."""
        now = time.time()
        with self._lock:
            conn = self._connect()
            conn.executemany(
                "UPDATE events SET replayed_at = ?, error = ? WHERE id = ?", [(now, error, i) for i in ids]
            )

    def claim(self, limit: int = 100, kind: str = SPOOL, since: float | None = None) -> list[StoredEvent]:
        """Take up to ``limit`` unsent rows for this process, so that several workers (and
        the CLI) replaying at once never send the same row twice. ``release`` undoes it."""
        claim = -float(os.getpid())  # a negative replayed_at marks "claimed, being sent"
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                where = "replayed_at IS NULL" + (" AND kind = ?" if kind != "all" else "")
                args: list[Any] = [kind] if kind != "all" else []
                if since is not None:
                    where += " AND stored_at >= ?"
                    args.append(since)
                rows = conn.execute(
                    f"SELECT * FROM events WHERE {where} ORDER BY id LIMIT {int(limit)}", args
                ).fetchall()
                conn.executemany(
                    "UPDATE events SET replayed_at = ? WHERE id = ?", [(claim, r[0]) for r in rows]
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return [StoredEvent(*row) for row in rows]

    def release(self, ids: Iterable[int]) -> None:
        with self._lock:
            conn = self._connect()
            conn.executemany("UPDATE events SET replayed_at = NULL WHERE id = ?", [(i,) for i in ids])

    def release_stale_claims(self) -> None:
        """Claims of processes that died mid-replay go back to the queue."""
        with self._lock:
            conn = self._connect()
            rows = conn.execute("SELECT DISTINCT replayed_at FROM events WHERE replayed_at < 0").fetchall()
            for (claim,) in rows:
                pid = int(-claim)
                if not _alive(pid):
                    conn.execute("UPDATE events SET replayed_at = NULL WHERE replayed_at = ?", (claim,))

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            cur = self._connect().execute("DELETE FROM events WHERE user_id = ?", (user_id,))
            return cur.rowcount

    # ------------------------------------------------------------------ reading
    def events(
        self,
        *,
        type: str | None = None,
        user: str | None = None,
        kind: str | None = None,
        after_id: int = 0,
        since: float | None = None,
        pending_only: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        where: list[str] = ["id > ?"]
        args: list[Any] = [after_id]
        for column, value in (("type", type), ("user_id", user), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("stored_at >= ?")
            args.append(since)
        if pending_only:
            where.append("replayed_at IS NULL")
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._connect().execute(sql, args).fetchall()
        return [StoredEvent(*row) for row in rows]

    def iter_pending(self, since: float | None = None, batch: int = 100) -> Iterator[list[StoredEvent]]:
        after = 0
        while True:
            rows = self.events(after_id=after, since=since, pending_only=True, limit=batch)
            if not rows:
                return
            yield rows
            after = rows[-1].id

    def count(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _columns(msg: dict[str, Any], body: bytes, kind: str, now: float, error: str | None) -> tuple[Any, ...]:
    """One row of ``events``, in the order of the INSERT's column list."""
    return (
        msg.get("messageId") or "",
        kind,
        msg.get("type") or "",
        msg.get("event") or msg.get("name"),
        _text(msg.get("userId")),
        _text(msg.get("anonymousId")),
        msg.get("timestamp"),
        now,
        error,
        body.decode(),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
