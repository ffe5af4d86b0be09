"""The embedded SQLite store: every message when there is no write key, plus the spool.

One file, WAL mode, so several worker processes and the CLI can write and read at once.
Only the sender thread (and the CLI) touch it: never the request path.

A row's ``kind`` says why it is here (``LOCAL``, ``SPOOL``, ``DEFERRED``), its ``state``
where it stands (``store_schema``: waiting, claimed, sent, rejected). A claimed row names
its owner (``claims.token``), so several workers and the CLI never send one row twice,
and the rows of an owner that ended go back to waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import claims, store_schema
from .store_schema import CLAIMED, COLUMNS, REJECTED, SENT, WAITING

if TYPE_CHECKING:
    from .messages import Encoded

__all__ = ["DEFERRED", "LOCAL", "SPOOL", "Purged", "Store", "StoredEvent"]

LOCAL = "local"  # recorded because no write key is set
SPOOL = "spool"  # delivery failed; waiting for `replay`
DEFERRED = "deferred"  # the in-memory queue was full; the sender drains these by itself
BOUNDED_KINDS = (SPOOL, DEFERRED)  # the kinds SPOOL_MAX_MB bounds

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM events"
#: What ``insert`` writes, in the order of ``_columns``' tuple.
_INSERT_COLUMNS = (
    "message_id",
    "kind",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "stored_at",
    "error",
    "state",
    "claimed_by",
    "claimed_at",
    "body",
)
_ROW_SLOTS = "(" + ", ".join("?" * len(_INSERT_COLUMNS)) + ")"
_INSERT = f"INSERT INTO events ({', '.join(_INSERT_COLUMNS)}) VALUES "
# A write is a few multi-row INSERTs: each statement hands the GIL back and must win it
# again from busy request threads, so fewer is faster (executemany would be one per row).
# Chunks are powers of two, so that sqlite3's statement cache holds at most a dozen shapes;
# 13 parameters a row stay under SQLite's limit (32766; 999 before 3.32).
_MAX_ROWS_PER_INSERT = 512 if sqlite3.sqlite_version_info >= (3, 32, 0) else 64
_UNCLAIM = f"state = '{WAITING}', claimed_by = NULL, claimed_at = NULL"


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
    state: str
    claimed_by: str | None
    claimed_at: float | None
    settled_at: float | None
    error: str | None
    body: str

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def replayed_at(self) -> float | None:
        """When the row left the queue (sent, or rejected by the endpoint); None before."""
        return self.settled_at


def _event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(**{name: row[name] for name in COLUMNS})


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
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            with contextlib.suppress(sqlite3.OperationalError):  # another process is switching it now
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            store_schema.ensure(conn, self.path)
        except BaseException:
            conn.close()
            raise
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

    @property
    def exists(self) -> bool:
        """The file is there (or open): what only deletes or reads need not create it."""
        return self._conn is not None or os.path.exists(self.path)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _owner(self) -> str:
        """This process's claim token, its lock beside the store held (before any claim)."""
        return claims.hold(self.path)

    # ------------------------------------------------------------------ writing
    def insert(
        self, rows: Iterable[Encoded], kind: str, error: str | None = None, *, claimed: bool = False
    ) -> int:
        """Store encoded messages in one transaction; returns how many. ``claimed``: the
        rows are this process's to send (deferred rows), invisible to other claimers."""
        now = time.time()
        owner = self._owner() if claimed else None
        values = [_columns(row.message, row.body, kind, now, error, owner) for row in rows]
        if not values:
            return 0
        with self._transaction() as conn:
            for start, end in _chunks(len(values)):
                chunk = values[start:end]
                conn.execute(
                    _INSERT + ",".join([_ROW_SLOTS] * len(chunk)), [field for row in chunk for field in row]
                )
        return len(values)

    def mark_replayed(self, ids: Iterable[int]) -> int:
        """Rows the endpoint accepted; returns how many were still there (a deletion may
        have purged some while they were posted)."""
        return self._settle(ids, SENT, None)

    def mark_rejected(self, ids: Iterable[int], error: str) -> int:
        """Rows the endpoint refused (400): no longer pending, the reason kept beside them."""
        return self._settle(ids, REJECTED, error)

    def _settle(self, ids: Iterable[int], state: str, error: str | None) -> int:
        now = time.time()
        with self._transaction() as conn:
            return conn.executemany(
                "UPDATE events SET state = ?, claimed_by = NULL, claimed_at = NULL, settled_at = ?,"
                " error = coalesce(?, error) WHERE id = ?",
                [(state, now, error, i) for i in ids],
            ).rowcount

    def claim(self, limit: int = 100, kind: str = SPOOL, since: float | None = None) -> list[StoredEvent]:
        """Take up to ``limit`` waiting rows for this process, so that several workers (and
        the CLI) replaying at once never send the same row twice. ``release`` undoes it."""
        owner = self._owner()
        where = "state = ?" + (" AND kind = ?" if kind != "all" else "")
        args: list[Any] = [WAITING] + ([kind] if kind != "all" else [])
        if since is not None:
            where += " AND stored_at >= ?"
            args.append(since)
        now = time.time()
        with self._transaction() as conn:
            rows = conn.execute(f"{_SELECT} WHERE {where} ORDER BY id LIMIT {int(limit)}", args).fetchall()
            conn.executemany(
                "UPDATE events SET state = ?, claimed_by = ?, claimed_at = ? WHERE id = ?",
                [(CLAIMED, owner, now, row["id"]) for row in rows],
            )
        claim = {"state": CLAIMED, "claimed_by": owner, "claimed_at": now}
        return [StoredEvent(**{**{name: row[name] for name in COLUMNS}, **claim}) for row in rows]

    def release(self, ids: Iterable[int]) -> None:
        """Claimed rows back to waiting (rows already settled stay settled)."""
        with self._transaction() as conn:
            conn.executemany(
                f"UPDATE events SET {_UNCLAIM} WHERE id = ? AND state = ?", [(i, CLAIMED) for i in ids]
            )

    def release_stale_claims(self) -> None:
        """Claims of owners that ended (mid-replay, or with deferred rows left) go back to
        waiting, whichever host or container they ran in (``claims.ended``). Read without
        the write lock, which is taken only when an owner has ended: releasing is idempotent."""
        with self._lock:
            conn = self._connect()
            sql = "SELECT DISTINCT claimed_by FROM events WHERE claimed_by IS NOT NULL"
            for (owner,) in conn.execute(sql).fetchall():
                if claims.ended(owner, self.path):
                    conn.execute(f"UPDATE events SET {_UNCLAIM} WHERE claimed_by = ?", (owner,))

    def release_mine(self) -> int:
        """Hand this process's claimed rows to any other (at exit): returns how many."""
        with self._lock:
            cur = self._connect().execute(
                f"UPDATE events SET {_UNCLAIM} WHERE claimed_by = ?", (claims.token(),)
            )
            return cur.rowcount

    def mine(self, kind: str, limit: int) -> list[StoredEvent]:
        """This process's claimed rows of ``kind``, oldest first (its deferred rows)."""
        sql = f"{_SELECT} WHERE claimed_by = ? AND kind = ? ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._connect().execute(sql, (claims.token(), kind, int(limit))).fetchall()
        return [_event(row) for row in rows]

    def count_mine(self, kind: str) -> int:
        sql = "SELECT COUNT(*) FROM events WHERE claimed_by = ? AND kind = ?"
        with self._lock:
            row = self._connect().execute(sql, (claims.token(), kind)).fetchone()
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
            rows = conn.execute(
                "SELECT id, length(CAST(body AS BLOB)) AS size, claimed_by FROM events"
                " WHERE kind IN (?, ?) AND state IN (?, ?) ORDER BY id",
                (*BOUNDED_KINDS, WAITING, CLAIMED),
            ).fetchall()
            excess = sum(row["size"] for row in rows) - max_bytes
            mine = claims.token()
            doomed: list[int] = []
            own = 0
            for row in rows:
                if excess <= 0:
                    break
                doomed.append(row["id"])
                own += row["claimed_by"] == mine
                excess -= row["size"]
            conn.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in doomed])
        return len(doomed), own

    def to_spool(self, ids: Iterable[int], error: str) -> int:
        """Deferred rows whose delivery failed after all retries: spooled, for `replay`.
        Returns how many were still there."""
        with self._transaction() as conn:
            return conn.executemany(
                f"UPDATE events SET kind = ?, {_UNCLAIM}, error = ? WHERE id = ?",
                [(SPOOL, error, i) for i in ids],
            ).rowcount

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            cur = self._connect().execute("DELETE FROM events WHERE user_id = ?", (user_id,))
            return cur.rowcount

    def linked_anonymous_ids(self, user_ids: Collection[str]) -> set[str]:
        """The anonymousIds rows of these users carried (the visitors they were before and
        while signed in)."""
        found: set[str] = set()
        if not self.exists:
            return found
        with self._lock:
            conn = self._connect()
            for chunk in _id_chunks(user_ids):
                sql = (
                    "SELECT DISTINCT anonymous_id FROM events WHERE anonymous_id IS NOT NULL"
                    f" AND user_id IN ({', '.join('?' * len(chunk))})"
                )
                found.update(row[0] for row in conn.execute(sql, chunk))
        return found

    def purge(self, user_ids: Collection[str], anonymous_ids: Collection[str] = ()) -> Purged:
        """Delete every row of these users, whatever its kind or state: theirs by userId,
        and the rows of their anonymousIds that carry no userId (a row of one of those
        anonymousIds with another userId is that other user's, and stays). One transaction.
        Returns how many rows went, and how many of them were this process's deferred rows
        (its pipeline counts those)."""
        if not self.exists:
            return Purged(0, 0)
        mine = claims.token()
        rows = own = 0
        with self._transaction() as conn:
            for column, ids, extra in (
                ("user_id", user_ids, ""),
                ("anonymous_id", anonymous_ids, " AND user_id IS NULL"),
            ):
                for chunk in _id_chunks(ids):
                    where = f"{column} IN ({', '.join('?' * len(chunk))}){extra}"
                    own += conn.execute(
                        f"SELECT COUNT(*) FROM events WHERE {where} AND claimed_by = ? AND kind = ?",
                        [*chunk, mine, DEFERRED],
                    ).fetchone()[0]
                    rows += conn.execute(f"DELETE FROM events WHERE {where}", chunk).rowcount
        return Purged(rows, own)

    def expire(self, older_than: float) -> int:
        """Delete the rows stored before ``older_than`` (a time.time()), except the claimed
        ones, which a process is sending now (LOCAL_STORE_RETENTION_DAYS). Returns how many."""
        with self._transaction() as conn:
            return conn.execute(
                "DELETE FROM events WHERE stored_at < ? AND state != ?", (older_than, CLAIMED)
            ).rowcount

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
        """Rows in id order; ``pending_only``: those waiting for a claimer."""
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
            where.append("state = ?")
            args.append(WAITING)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._connect().execute(sql, args).fetchall()
        return [_event(row) for row in rows]

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


@dataclass(frozen=True)
class Purged:
    """What :meth:`Store.purge` deleted: ``rows`` in all, ``own_deferred`` of them the
    calling process's deferred rows."""

    rows: int
    own_deferred: int


_IDS_PER_STATEMENT = 500  # ids bound in one IN (...), well under SQLite's variable limit


def _id_chunks(ids: Collection[str]) -> Iterator[list[str]]:
    items = sorted(set(ids))
    for start in range(0, len(items), _IDS_PER_STATEMENT):
        yield items[start : start + _IDS_PER_STATEMENT]


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """``n`` rows as slices of power-of-two lengths, the largest first."""
    start = 0
    while start < n:
        size = min(_MAX_ROWS_PER_INSERT, 1 << ((n - start).bit_length() - 1))
        yield start, start + size
        start += size


def _columns(
    msg: dict[str, Any], body: bytes, kind: str, now: float, error: str | None, owner: str | None
) -> tuple[Any, ...]:
    """One row of ``events``, in the order of ``_INSERT_COLUMNS``."""
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
        WAITING if owner is None else CLAIMED,
        owner,
        None if owner is None else now,
        body.decode(),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
