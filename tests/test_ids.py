"""Random ids (messageId, a new visitor's anonymousId): uuid4's format, unique across
threads and across a fork."""

from __future__ import annotations

import os
import re
import threading
import uuid

import pytest

from segment_middleware import ids
from segment_middleware.identity import new_anonymous_id
from segment_middleware.ids import random_id

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_ids_are_unique_uuid4s() -> None:
    values = [random_id() for _ in range(4000)]
    assert len(set(values)) == len(values)
    assert all(UUID4.match(v) for v in values)
    for v in values:
        parsed = uuid.UUID(v)
        assert str(parsed) == v and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every random digit place is filled from the random bytes (not left as the block's
    # template): each of the 30 free places takes all 16 values over 4,000 ids.
    free = [k for k in range(36) if k not in (8, 13, 14, 18, 19, 23)]
    assert all(len({v[k] for v in values}) == 16 for k in free)
    assert {v[19] for v in values} == set("89ab")


def test_new_visitors_and_messages_share_one_source_and_never_an_id() -> None:
    ids._pool.clear()
    random_id()  # a fresh block in the pool, one id taken
    left = len(ids._pool)
    new_anonymous_id()  # a new visitor's id comes from that same pool
    assert left > 0 and len(ids._pool) == left - 1
    values = [new_anonymous_id() if i % 2 else random_id() for i in range(1000)]
    assert len(set(values)) == 1000


def test_threads_taking_ids_at_once_never_get_the_same_one() -> None:
    found: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def take(out: list[str]) -> None:
        start.wait()
        out.extend(random_id() for _ in range(2000))

    threads = [threading.Thread(target=take, args=(out,)) for out in found]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    values = [v for out in found for v in out]
    assert len(values) == 16000 and len(set(values)) == 16000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    random_id()  # the parent holds a block now
    assert ids._pool  # the rest of it, which the child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.write(write, ",".join(random_id() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = set(f.read().split(","))
    os.waitpid(pid, 0)
    parent = {random_id() for _ in range(300)}
    assert len(child) == 300 and UUID4.match(next(iter(child)))
    assert not parent & child
