"""The embedded SQLite store: every message when there is no write key, plus the spool.

One file, WAL mode, so several worker processes and the CLI can write and read at once.
Only the sender thread (and the CLI) touch it: never the request path.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .messages import Encoded

__all__ = ["DEFERRED", "LOCAL", "SPOOL", "Store", "StoredEvent", "claim_mark"]

_ROW_SLOTS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# A write is a few multi-row INSERTs: each statement hands the GIL back and must win it
# again from busy request threads, so fewer is faster (executemany would be one per row).
# Chunks are powers of two, so that sqlite3's statement cache holds at most a dozen shapes;
# 11 parameters a row stay under SQLite's limit (32766; 999 before 3.32).
_MAX_ROWS_PER_INSERT = 512 if sqlite3.sqlite_version_info >= (3, 32, 0) else 64

LOCAL = "local"  # recorded because no write key is set
SPOOL = "spool"  # delivery failed; waiting for `replay`
DEFERRED = "deferred"  # the in-memory queue was full; the sender drains these by itself
WAITING = (SPOOL, DEFERRED)  # the kinds SPOOL_MAX_MB bounds

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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under this handle's lock: the connection is in autocommit
        mode, where each statement of an ``executemany`` would be a transaction of its own."""
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ writing
    def insert(
        self, rows: Iterable[Encoded], kind: str, error: str | None = None, *, claimed: bool = False
    ) -> int:
        """Store encoded messages in one transaction; returns how many. ``claimed``: the
        rows are this process's to send (deferred rows), invisible to other claimers."""
        now = time.time()
        mark = claim_mark() if claimed else None
        values = [_columns(row.message, row.body, kind, now, error, mark) for row in rows]
        if not values:
            return 0
        with self._transaction() as conn:
            for start, end in _chunks(len(values)):
                chunk = values[start:end]
                conn.execute(
                    "INSERT INTO events (message_id, kind, type, event, user_id, anonymous_id, timestamp,"
                    " stored_at, error, replayed_at, body) VALUES " + ",".join([_ROW_SLOTS] * len(chunk)),
                    [field for row in chunk for field in row],
                )
        return len(values)

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = time.time()
        with self._transaction() as conn:
            conn.executemany("UPDATE events SET replayed_at = ? WHERE id = ?", [(now, i) for i in ids])

    def mark_rejected(self, ids: Iterable[int], error: str) -> None:
        """Rows the endpoint refused (400): no longer pending, the reason kept beside them."""
        now = time.time()
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE events SET replayed_at = ?, error = ? WHERE id = ?", [(now, error, i) for i in ids]
            )

    def claim(self, limit: int = 100, kind: str = SPOOL, since: float | None = None) -> list[StoredEvent]:
        """Take up to ``limit`` unsent rows for this process, so that several workers (and
        the CLI) replaying at once never send the same row twice. ``release`` undoes it."""
        claim = claim_mark()
        where = "replayed_at IS NULL" + (" AND kind = ?" if kind != "all" else "")
        args: list[Any] = [kind] if kind != "all" else []
        if since is not None:
            where += " AND stored_at >= ?"
            args.append(since)
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT * FROM events WHERE {where} ORDER BY id LIMIT {int(limit)}", args
            ).fetchall()
            conn.executemany("UPDATE events SET replayed_at = ? WHERE id = ?", [(claim, r[0]) for r in rows])
        return [StoredEvent(*row) for row in rows]

    def release(self, ids: Iterable[int]) -> None:
        with self._transaction() as conn:
            conn.executemany("UPDATE events SET replayed_at = NULL WHERE id = ?", [(i,) for i in ids])

    def release_stale_claims(self) -> None:
        """Claims of processes that died (mid-replay, or with deferred rows left) go back to
        the queue; so do claims under this process's pid that are not its own mark (a dead
        process whose pid was reused, as in containers)."""
        mine = claim_mark()
        with self._lock:
            conn = self._connect()
            rows = conn.execute("SELECT DISTINCT replayed_at FROM events WHERE replayed_at < 0").fetchall()
            for (claim,) in rows:
                pid = int(-claim)
                if claim != mine and (pid == os.getpid() or not _alive(pid)):
                    conn.execute("UPDATE events SET replayed_at = NULL WHERE replayed_at = ?", (claim,))

    def release_mine(self) -> int:
        """Hand this process's claimed rows to any other (at exit): returns how many."""
        with self._lock:
            cur = self._connect().execute(
                "UPDATE events SET replayed_at = NULL WHERE replayed_at = ?", (claim_mark(),)
            )
            return cur.rowcount

    def mine(self, kind: str, limit: int) -> list[StoredEvent]:
        """This process's claimed rows of ``kind``, oldest first (its deferred rows)."""
        with self._lock:
            rows = (
                self._connect()
                .execute(
                    "SELECT * FROM events WHERE replayed_at = ? AND kind = ? ORDER BY id LIMIT ?",
                    (claim_mark(), kind, int(limit)),
                )
                .fetchall()
            )
        return [StoredEvent(*row) for row in rows]

    def count_mine(self, kind: str) -> int:
        sql = "SELECT COUNT(*) FROM events WHERE replayed_at = ? AND kind = ?"
        with self._lock:
            row = self._connect().execute(sql, (claim_mark(), kind)).fetchone()
        return int(row[0])

    def evict(self, max_bytes: int) -> tuple[int, int] | None:
        """Past ``max_bytes`` of rows waiting to be sent (spooled or deferred), delete the
        oldest until under it. Returns (rows evicted, of which this process's own), or None
        when the file's used pages, which bound the waiting bytes from above, are under it
        (then the exact sum, which reads every waiting row, is not taken)."""
        with self._transaction() as conn:  # what is summed is what is deleted
            page_size, pages, free = (
                conn.execute(f"PRAGMA {pragma}").fetchone()[0]
                for pragma in ("page_size", "page_count", "freelist_count")
            )
            if (pages - free) * page_size <= max_bytes:
                return None
            waiting = "kind IN (?, ?) AND (replayed_at IS NULL OR replayed_at < 0)"
            rows = conn.execute(
                f"SELECT id, length(CAST(body AS BLOB)), replayed_at FROM events WHERE {waiting} ORDER BY id",
                WAITING,
            ).fetchall()
            excess = sum(size for _, size, _ in rows) - max_bytes
            mine = claim_mark()
            doomed: list[int] = []
            own = 0
            for row_id, size, claim in rows:
                if excess <= 0:
                    break
                doomed.append(row_id)
                own += claim == mine
                excess -= size
            conn.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in doomed])
        return len(doomed), own

    def to_spool(self, ids: Iterable[int], error: str) -> None:
        """Deferred rows whose delivery failed after all retries: spooled, for `replay`."""
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE events SET kind = ?, replayed_at = NULL, error = ? WHERE id = ?",
                [(SPOOL, error, i) for i in ids],
            )

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


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """``n`` rows as slices of power-of-two lengths, the largest first."""
    start = 0
    while start < n:
        size = min(_MAX_ROWS_PER_INSERT, 1 << ((n - start).bit_length() - 1))
        yield start, start + size
        start += size


_marks: dict[int, float] = {}


def claim_mark() -> float:
    """This process's claim on a row: a negative ``replayed_at`` of its pid plus a random
    fraction, so that a later process reusing the pid does not take the rows as its own."""
    pid = os.getpid()
    mark = _marks.get(pid)
    if mark is None:
        mark = _marks[pid] = -(pid + random.uniform(0.001, 0.999))
    return mark


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


def _columns(
    msg: dict[str, Any], body: bytes, kind: str, now: float, error: str | None, claim: float | None
) -> tuple[Any, ...]:
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
        claim,
        body.decode(),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
