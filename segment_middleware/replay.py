"""Sending stored rows again (the CLI's ``replay`` and AUTO_REPLAY), one claim at a time.

A 400 means one message in the batch is bad, and Segment refuses the whole batch for it;
like live delivery, the batch is split until the bad row is alone, which is marked rejected
(kept in the store with the reason) so it never blocks the rows around it. Any other error
is an outage: the rows not yet sent go back to the queue and the replay stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .messages import Encoded
from .store import Store, StoredEvent

__all__ = ["ReplayResult", "replay"]

Post = Callable[[list[Encoded]], None]


@dataclasses.dataclass
class ReplayResult:
    sent: int = 0
    rejected: int = 0
    error: Exception | None = None
    unsent: list[int] = dataclasses.field(default_factory=list)  # row ids left when ``error`` stopped it


def replay(
    store: Store,
    post: Post,
    *,
    kind: str = "all",
    since: float | None = None,
    batch_size: int = 100,
    max_batches: int | None = None,
    mine: bool = False,
) -> ReplayResult:
    """Claim, post and mark rows until none are left, an outage, or ``max_batches``.
    ``mine``: send the rows this process already holds (its deferred ones) instead of
    claiming; on an outage they stay held, and ``unsent`` names them for the caller."""
    result = ReplayResult()
    batches = 0
    while max_batches is None or batches < max_batches:
        rows = store.mine(kind, batch_size) if mine else store.claim(batch_size, kind=kind, since=since)
        if not rows:
            break
        batches += 1
        done: set[int] = set()
        try:
            _deliver(store, post, rows, result, done)
        except Exception as exc:
            result.unsent = [row.id for row in rows if row.id not in done]
            if not mine:
                store.release(result.unsent)
            result.error = exc
            break
    return result


def _deliver(store: Store, post: Post, rows: list[StoredEvent], result: ReplayResult, done: set[int]) -> None:
    try:
        # The body is what is sent; the message holds only what a log line may name (a
        # json.loads of every row would cost more than the post).
        post([Encoded({"type": row.type, "messageId": row.message_id}, row.body.encode()) for row in rows])
    except Exception as exc:
        status = getattr(exc, "status", None)
        if status != 400:
            raise
        if len(rows) > 1:
            mid = len(rows) // 2
            _deliver(store, post, rows[:mid], result, done)
            _deliver(store, post, rows[mid:], result, done)
            return
        reason = f"rejected by the endpoint: 400 {getattr(exc, 'message', '')}".strip()
        # Counted as the store settled them: a row a deletion purged meanwhile is not counted.
        result.rejected += store.mark_rejected([rows[0].id], reason)
        done.add(rows[0].id)
        return
    result.sent += store.mark_replayed(row.id for row in rows)
    done.update(row.id for row in rows)
