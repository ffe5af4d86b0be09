"""Whose rows a deletion takes: the users named, and the visitors they were.

A deleted user's data is more than the rows carrying their userId: the anonymousIds seen
with that userId (the visits before they signed in, the log-in identify and alias that
linked the two) identify them as well. :class:`Subjects` gathers those ids from every place
that holds messages (the queue, the overflow handoff, the store) before any of them is
purged, so that each place purges by the same, complete set.

The rule every holder applies (the store in SQL, the queue here):

- a message whose userId is a deleted user's goes (an alias's previousId links the id
  it names, as its anonymousId does);
- a message with no userId whose anonymousId was seen with a deleted user goes;
- a message of such an anonymousId that carries another userId stays: it is that other
  person's (a shared device; RESET_ON_LOGOUT makes this rare).

A batch a sender had already taken when the deletion ran cannot be recalled, but it must
not come back to disk either (spooled after a failure, or at shutdown): the process
remembers whom it deleted and when (:func:`remember`), and the disk drops their messages
made before that from any write (:func:`without_erased`), counted ``blocked``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .isotime import parse_iso
from .messages import Encoded, Queued, QueueItem

__all__ = ["Subjects", "remember", "reset", "without_erased"]


@dataclass
class Subjects:
    """The userIds being deleted and the anonymousIds found linked to them so far."""

    user_ids: frozenset[str]
    anonymous_ids: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, user_ids: Iterable[str]) -> Subjects:
        return cls(frozenset(user_ids))

    def link(self, user_id: Any, anonymous_id: Any, previous_id: Any = None) -> None:
        """A message seen anywhere: when it is a deleted user's, its other ids are theirs too."""
        if user_id is not None and str(user_id) in self.user_ids:
            for other in (anonymous_id, previous_id):
                if other is not None and str(other) not in self.user_ids:
                    self.anonymous_ids.add(str(other))

    def covers(self, user_id: Any, anonymous_id: Any, previous_id: Any = None) -> bool:
        """Whether a message with these ids is a deleted user's (the module's rule)."""
        if user_id is not None:
            return str(user_id) in self.user_ids
        return anonymous_id is not None and str(anonymous_id) in self.anonymous_ids

    def link_queued(self, items: Iterable[QueueItem]) -> None:
        for item in items:
            self.link(*_ids(item))

    def covers_queued(self, item: QueueItem) -> bool:
        return self.covers(*_ids(item))


def _ids(packed: QueueItem) -> tuple[Any, Any, Any]:
    """(userId, anonymousId, previousId) of a queued call: a built message keeps them among
    its kept fields, a tracker call's message holds them, a request's page call keeps its
    ids beside its facts."""
    if isinstance(packed, Encoded):
        kept = packed.message
        return kept.get("userId"), kept.get("anonymousId"), kept.get("previousId")
    item = Queued.unpack(packed)
    if item.message is None:
        return item.user_id, item.anonymous_id, None
    message = item.message
    return message.get("userId"), message.get("anonymousId"), message.get("previousId")


# Whom this process deleted, and when: userId -> time, anonymousId -> time. Kept for a day,
# longer than any batch stays in a sender's hands (its retries give up well before).
_users: dict[str, float] = {}
_anonymous: dict[str, float] = {}
_lock = threading.Lock()
REMEMBER_FOR = 86400.0


def remember(subjects: Subjects) -> None:
    """From now on, this process writes to disk no message of these subjects made before now."""
    global _users, _anonymous
    now = time.time()
    with _lock:  # replaced, never changed in place: readers on other threads see one or the other
        users = {k: t for k, t in _users.items() if now - t < REMEMBER_FOR}
        anonymous = {k: t for k, t in _anonymous.items() if now - t < REMEMBER_FOR}
        users.update(dict.fromkeys(subjects.user_ids, now))
        anonymous.update(dict.fromkeys(subjects.anonymous_ids, now))
        _users, _anonymous = users, anonymous


def reset() -> None:
    """Forget every deletion (tests)."""
    global _users, _anonymous
    with _lock:
        _users, _anonymous = {}, {}


def without_erased(batch: list[Encoded]) -> tuple[list[Encoded], int]:
    """``batch`` without the messages of deleted users made before their deletion, and how
    many were taken out (a no-op until the process has deleted someone). Messages made
    after it (the same id signing up again) are not the deleted data: they stay."""
    users, anonymous = _users, _anonymous
    if not users:
        return batch, 0
    kept = [encoded for encoded in batch if not _erased(encoded.message, users, anonymous)]
    return kept, len(batch) - len(kept)


def _erased(message: dict[str, Any], users: dict[str, float], anonymous: dict[str, float]) -> bool:
    """The module's rule, with the time of the deletion: a message made after it stays."""
    user_id = message.get("userId")
    if user_id is not None:
        deleted_at = users.get(str(user_id))
    else:
        anonymous_id = message.get("anonymousId")
        deleted_at = None if anonymous_id is None else anonymous.get(str(anonymous_id))
    if deleted_at is None:
        return False
    made = _when(message.get("timestamp"))
    # Timestamps have milliseconds: one made in the deletion's own millisecond counts as after.
    return made is None or made + 0.001 <= deleted_at


def _when(timestamp: Any) -> float | None:
    """A message's ISO 8601 timestamp as a time.time(); None when it cannot be read."""
    if not isinstance(timestamp, str):
        return None
    try:
        return parse_iso(timestamp).timestamp()
    except ValueError:
        return None
