"""User deletion, suppression and retention (issue 27 item 1), against real parts: a
Public-API-compatible receiver on 127.0.0.1, the Segment receiver, real SQLite stores,
the CLI in a subprocess."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY, wait_until
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from public_api_receiver import PublicAPIReceiver
from segment_receiver import SegmentReceiver

from segment_middleware import erasure, privacy
from segment_middleware.core import Runtime
from segment_middleware.privacy import PrivacyError, PublicAPIError
from segment_middleware.public_api import PublicAPI
from segment_middleware.settings import Settings, SettingsError
from segment_middleware.store import Store

TOKEN = "sgp_test-public-api-token-0123456789"
CLI = Path(sys.executable).parent / "segment-middleware"


@pytest.fixture(autouse=True)
def _forget_deletions() -> Iterator[None]:
    """A deletion is remembered by the process (its in-flight batches never reach the disk):
    later tests' messages of the same ids must not inherit that."""
    yield
    erasure.reset()


@pytest.fixture(autouse=True)
def _no_secret_in_any_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every record any logger wrote during the test (urllib3's and the SDK's at DEBUG too)
    is free of the write key and the tokens."""
    caplog.set_level(logging.DEBUG)
    yield
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "wrong-token" not in text
    no_secret(text)


@pytest.fixture
def api() -> Iterator[PublicAPIReceiver]:
    with PublicAPIReceiver(TOKEN) as server:
        yield server


def settings(store_path: str, **more: Any) -> Settings:
    return Settings.from_sources({"local_store": store_path, "flush_interval": 0.05, **more}, environ={})


def api_settings(api: PublicAPIReceiver, store_path: str, **more: Any) -> Settings:
    return settings(store_path, write_key=WRITE_KEY, public_api_token=TOKEN, public_api_host=api.url, **more)


def balanced(stats: dict[str, int], pending: int = 0) -> bool:
    settled = ("delivered", "stored", "failed", "dropped", "spooled", "blocked", "deferred")
    return stats["queued"] == sum(stats[k] for k in settled) + pending


def no_secret(text: str) -> None:
    assert TOKEN not in text and WRITE_KEY not in text, text


# ---------------------------------------------------------------------- filing
def test_delete_user_files_one_regulation_and_returns_its_id(
    api: PublicAPIReceiver, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="segment_middleware"):
        regulate_id = privacy.delete_user(42, settings=api_settings(api, store_path))
    (post,) = api.posts()
    assert post.path == "/regulations"
    assert post.body == {
        "regulationType": "SUPPRESS_WITH_DELETE",
        "subjectType": "USER_ID",
        "subjectIds": ["42"],
    }
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.headers["Content-Type"] == "application/json"
    assert regulate_id == api.regulations[0]["id"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"filed regulation {regulate_id}" in logged
    no_secret(logged)


def test_more_than_5000_ids_are_filed_5000_a_call_each_once_in_order(
    api: PublicAPIReceiver, store_path: str
) -> None:
    ids = [f"user-{i}" for i in range(12_001)]
    done = privacy.delete_users([*ids, "user-7"], settings=api_settings(api, store_path))  # a repeat: once
    posts = api.posts()
    assert [len(p.body["subjectIds"]) for p in posts] == [5000, 5000, 2001]
    assert [i for p in posts for i in p.body["subjectIds"]] == ids
    assert done.regulation_ids == [r["id"] for r in api.regulations] and len(done.regulation_ids) == 3


def test_a_429_is_retried_after_retry_after_then_filed(api: PublicAPIReceiver, store_path: str) -> None:
    api.fail_next(1, 429, retry_after="1")
    regulate_id = privacy.delete_user("u1", settings=api_settings(api, store_path))
    first, second = api.seen
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95, "Retry-After: 1 honoured"
    assert second.at - first.at < 10
    assert first.body == second.body
    assert regulate_id == api.regulations[0]["id"]


def test_a_429_without_retry_after_and_a_5xx_back_off_then_file(api: PublicAPIReceiver) -> None:
    api.fail_next(1, 429)
    api.fail_next(1, 503)
    waits: list[float] = []
    client = PublicAPI(TOKEN, api.url, sleep=waits.append)
    assert client.create_regulation(["u1"]) == "reg000001"
    assert [s.status for s in api.seen] == [429, 503, 200]
    assert len(waits) == 2 and 1.0 <= waits[0] < waits[1] <= 60, waits


def test_rate_limited_for_good_gives_up_naming_the_status(api: PublicAPIReceiver) -> None:
    api.fail_next(100, 429, retry_after="1")
    waits: list[float] = []
    with pytest.raises(PublicAPIError) as raised:
        PublicAPI(TOKEN, api.url, sleep=waits.append).create_regulation(["u1"])
    assert raised.value.status == 429 and "429" in str(raised.value)
    assert len(api.seen) == 8 and waits == [1.0] * 7
    no_secret(str(raised.value))


def test_a_refusal_is_raised_at_once_without_the_token(api: PublicAPIReceiver, store_path: str) -> None:
    wrong = settings(
        store_path, write_key=WRITE_KEY, public_api_token="not-" + TOKEN, public_api_host=api.url
    )
    with pytest.raises(PublicAPIError) as raised:
        privacy.delete_user("u1", settings=wrong)
    assert raised.value.status == 401 and "the token is missing or invalid" in str(raised.value)
    assert len(api.seen) == 1
    assert "not-" + TOKEN not in str(raised.value) and "not-" + TOKEN not in repr(raised.value)


def test_with_a_write_key_and_no_token_nothing_is_done(api: PublicAPIReceiver, store_path: str) -> None:
    rt = Runtime(settings(store_path))  # no write key: the row goes to the store
    rt.tracker(user_id="u1").track("Kept")
    assert rt.delivery.flush(5)
    with pytest.raises(PrivacyError, match="PUBLIC_API_TOKEN"):
        privacy.delete_user("u1", settings=settings(store_path, write_key=WRITE_KEY))
    assert [r.user_id for r in Store(store_path).events()] == ["u1"], "not purged either"
    assert api.seen == []
    rt.delivery.shutdown(1)


def test_bad_ids_are_refused_before_anything() -> None:
    for bad in ([], [""], [None], ["x" * 1025]):
        with pytest.raises(PrivacyError):
            privacy.delete_users(bad, settings=Settings())
    with pytest.raises(PrivacyError, match="not one string"):
        privacy.delete_users("u1", settings=Settings())


def test_the_token_is_a_secret_setting(store_path: str) -> None:
    s = settings(store_path, public_api_token=TOKEN)
    assert TOKEN not in repr(s) and TOKEN not in repr(PublicAPI(TOKEN))
    with pytest.raises(SettingsError) as raised:
        Settings.from_sources({"public_api_token": TOKEN, "host": TOKEN}, environ={})
    assert TOKEN not in str(raised.value)
    env = Settings.from_sources(
        environ={"SEGMENT_PUBLIC_API_TOKEN": TOKEN, "SEGMENT_PUBLIC_API_HOST": "http://127.0.0.1:9/"}
    )
    assert env.public_api_token == TOKEN and env.public_api_host == "http://127.0.0.1:9"
    assert Settings().public_api_host == "https://api.segmentapis.com"


# ---------------------------------------------------------------------- the local purge
def _visit(rt: Runtime) -> None:
    """u1 as a visitor (a1) who signs in; a1 before sign-in; u2; a2; u3 on a1's device."""
    rt.tracker(anonymous_id="a1").page("Before sign-in")
    rt.tracker(user_id="u1", anonymous_id="a1").identify("u1", {"plan": "pro"})
    rt.tracker(user_id="u1", anonymous_id="a1").track("Order Completed")
    rt.tracker(user_id="u2", anonymous_id="a2").track("Order Completed")
    rt.tracker(anonymous_id="a2").page("Anonymous")
    rt.tracker(user_id="u3", anonymous_id="a1").track("Shared Device")


def _who(rows: list[Any]) -> list[tuple[str | None, str | None]]:
    return sorted(((r.user_id, r.anonymous_id) for r in rows), key=str)


def test_the_local_store_loses_the_users_rows_and_their_anonymous_ones(store_path: str) -> None:
    rt = Runtime(settings(store_path))
    _visit(rt)
    assert rt.delivery.flush(5)
    assert len(Store(store_path).events()) == 6
    done = privacy.delete_users(["u1"], settings=settings(store_path))
    # No key, no token: nothing at Segment. (Rows of "u1" in other tests' stores count too:
    # every pipeline of this process is purged.)
    assert done.regulation_ids == [] and done.rows >= 3
    assert _who(Store(store_path).events()) == _who_expected()
    rt.delivery.shutdown(1)


def _who_expected() -> list[tuple[str | None, str | None]]:
    return sorted([("u2", "a2"), (None, "a2"), ("u3", "a1")], key=str)


def test_a_message_made_after_the_deletion_is_kept(store_path: str) -> None:
    """The process remembers whom it deleted only for what was made before: the same id
    signing up again is a new person's data."""
    rt = Runtime(settings(store_path))
    rt.tracker(user_id="u1").track("Before")
    assert rt.delivery.flush(5)
    privacy.delete_users(["u1"], settings=rt.settings)
    rt.tracker(user_id="u1").track("After")
    assert rt.delivery.flush(5)
    assert [r.event for r in Store(store_path).events()] == ["After"]
    assert rt.delivery.stats()["blocked"] == 0
    rt.delivery.shutdown(1)


def test_the_spool_and_the_queue_lose_the_users_messages(api: PublicAPIReceiver, store_path: str) -> None:
    """Spooled rows (an outage) and messages still in memory (a long FLUSH_INTERVAL) of the
    user go; the queue's are counted ``blocked``; the others stay, in order."""
    dead = {"host": "http://127.0.0.1:9", "max_retries": 0}
    rt = Runtime(api_settings(api, store_path, **dead))
    _visit(rt)
    assert rt.delivery.flush(10)
    assert len(Store(store_path).events(kind="spool")) == 6
    slow = Runtime(api_settings(api, store_path, **dead, flush_interval=60))
    _visit(slow)
    slow.tracker(user_id="u2", anonymous_id="a2").track("Last")
    assert len(slow.delivery.queue) == 7
    done = privacy.delete_users(["u1"], settings=slow.settings)
    assert done.messages == 3 and done.rows >= 3 and len(done.regulation_ids) == 1
    assert _who(Store(store_path).events()) == _who_expected()
    s = slow.delivery.stats()
    assert s["blocked"] == 3 and balanced(s, pending=4)
    slow.delivery.shutdown(0.5)  # what is left is spooled: the other users' only
    assert _who(Store(store_path).events()) == sorted(_who_expected() * 2 + [("u2", "a2")], key=str)
    assert balanced(slow.delivery.stats())
    rt.delivery.shutdown(0.5)


def test_deferred_rows_of_the_user_go_and_leave_the_deferred_count(
    receiver: SegmentReceiver, api: PublicAPIReceiver, store_path: str
) -> None:
    """Past MAX_QUEUE_SIZE messages wait on disk as this process's deferred rows; the user's
    go, and move from ``deferred`` to ``blocked``."""
    receiver.refuse()
    rt = Runtime(api_settings(api, store_path, host=receiver.url, max_queue_size=20, flush_at=10))
    for i in range(60):
        rt.tracker(user_id="u1", anonymous_id="a1").track("E", {"i": i})
        rt.tracker(user_id="u2", anonymous_id="a2").track("E", {"i": i})
    wait_until(
        lambda: rt.delivery.stats()["deferred"] >= 60 and not rt.delivery.disk.handoff, "the overflow on disk"
    )
    before = rt.delivery.stats()
    mine = len([r for r in Store(store_path).events(kind="deferred") if r.user_id == "u1"])
    assert mine >= 20
    privacy.delete_users(["u1"], settings=rt.settings)
    assert not [r for r in Store(store_path).events() if r.user_id == "u1"]
    after = rt.delivery.stats()
    assert after["deferred"] <= before["deferred"] - mine
    assert after["blocked"] >= mine
    rt.delivery.shutdown(0.5)
    assert balanced(rt.delivery.stats())
    assert not [r for r in Store(store_path).events() if r.user_id == "u1"]


# ---------------------------------------------------------------------- suppression
def test_suppressed_users_are_never_sent_and_counted_blocked(
    receiver: SegmentReceiver, store_path: str
) -> None:
    suppressed = {"u1"}
    rt = Runtime(settings(store_path, write_key=WRITE_KEY, host=receiver.url, suppressed_users=suppressed))
    rt.tracker(user_id="u1").track("Hidden")
    rt.tracker(user_id="u2").track("Shown")
    rt.tracker(anonymous_id="a9").track("Anonymous")
    assert rt.delivery.flush(10)
    suppressed.add("u2")  # read as each message is built: an id added later counts
    rt.tracker(user_id="u2").track("Hidden Later")
    assert rt.delivery.flush(10)
    assert sorted(m["event"] for m in receiver.messages) == ["Anonymous", "Shown"]
    s = rt.delivery.stats()
    assert s["blocked"] == 2 and s["delivered"] == 2 and balanced(s)
    rt.delivery.shutdown(1)


def test_a_suppression_callable_and_a_hook_that_sets_a_suppressed_id(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    def becomes_u1(msg: dict[str, Any]) -> dict[str, Any]:
        return {**msg, "userId": "u1"} if msg.get("event") == "Rename" else msg

    rt = Runtime(settings(store_path, suppressed_users=lambda uid: uid == "u1", before_send=[becomes_u1]))
    rt.tracker(user_id="u1").track("Hidden")
    rt.tracker(user_id="u2").track("Rename")
    rt.tracker(user_id="u2").track("Stored")
    assert rt.delivery.flush(5)
    assert [r.event for r in Store(store_path).events()] == ["Stored"]  # not stored locally either
    assert rt.delivery.stats()["blocked"] == 2
    rt.delivery.shutdown(1)

    def broken(uid: str) -> bool:
        raise RuntimeError("database down")

    failing = Runtime(settings(store_path + "2", suppressed_users=broken))
    with caplog.at_level(logging.ERROR, logger="segment_middleware"):
        for _ in range(3):
            failing.tracker(user_id="u2").track("Blocked While Broken")
        failing.tracker(anonymous_id="a").track("Anonymous")
        assert failing.delivery.flush(5)
    assert [r.event for r in Store(store_path + "2").events()] == ["Anonymous"]
    lines = [r.getMessage() for r in caplog.records if "SUPPRESSED_USERS" in r.getMessage()]
    assert len(lines) == 1 and "RuntimeError" in lines[0]
    failing.delivery.shutdown(1)


def test_suppressed_users_setting_is_checked() -> None:
    with pytest.raises(SettingsError, match="suppressed_users"):
        Settings(suppressed_users=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="strings"):
        Settings(suppressed_users={1})  # type: ignore[arg-type]
    assert Settings(suppressed_users=frozenset({"a"})).is_suppressed is not None
    assert Settings().is_suppressed is None


# ---------------------------------------------------------------------- retention
def test_rows_older_than_the_retention_leave_the_store(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = Runtime(settings(store_path))
    for i in range(5):
        old.tracker(user_id=f"old{i}").track("Old")
    assert old.delivery.flush(5)
    old.delivery.shutdown(1)
    with sqlite3.connect(store_path) as conn:  # ten days ago
        conn.execute("UPDATE events SET stored_at = stored_at - 10 * 86400")
        conn.execute("UPDATE events SET state = 'claimed', claimed_by = 'someone' WHERE user_id = 'old0'")
    rt = Runtime(settings(store_path, local_store_retention_days=7))
    with caplog.at_level(logging.INFO, logger="segment_middleware"):
        rt.tracker(user_id="new").track("New")
        assert rt.delivery.flush(5)
        wait_until(lambda: len(Store(store_path).events()) < 6, "the retention pass after the write")
    assert sorted(r.user_id or "" for r in Store(store_path).events()) == ["new", "old0"]  # a claim stays
    assert any("4 row(s) older than LOCAL_STORE_RETENTION_DAYS" in r.getMessage() for r in caplog.records)
    rt.delivery.shutdown(1)
    kept = Runtime(settings(store_path))  # no retention: nothing expires
    kept.tracker(user_id="new2").track("New")
    assert kept.delivery.flush(5)
    assert len(Store(store_path).events()) == 3
    kept.delivery.shutdown(1)


# ---------------------------------------------------------------------- the CLI
def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_") and k != "DJANGO_SETTINGS_MODULE"
    }
    proc = subprocess.run([str(CLI), *args], env={**base, **env}, capture_output=True, text=True, timeout=60)
    no_secret(proc.stdout + proc.stderr)
    return proc


def test_cli_delete_user_and_regulations(api: PublicAPIReceiver, store_path: str) -> None:
    rt = Runtime(settings(store_path))
    _visit(rt)
    assert rt.delivery.flush(5)
    rt.delivery.shutdown(1)
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_PUBLIC_API_TOKEN": TOKEN,
        "SEGMENT_PUBLIC_API_HOST": api.url,
        "SEGMENT_LOCAL_STORE": store_path,
    }
    proc = run_cli("delete-user", "u1", "u9", env=env)
    assert proc.returncode == 0, proc.stderr
    regulate_id = api.regulations[0]["id"]
    assert f"filed regulation {regulate_id}" in proc.stdout and "3 stored row(s)" in proc.stdout
    assert api.posts()[0].body["subjectIds"] == ["u1", "u9"]
    assert _who(Store(store_path).events()) == _who_expected()

    api.set_status(regulate_id, "FINISHED")
    listed = run_cli("regulations", env=env)
    assert listed.returncode == 0, listed.stderr
    assert regulate_id in listed.stdout and "FINISHED" in listed.stdout
    one = run_cli("regulations", regulate_id, "--json", env=env)
    assert json.loads(one.stdout)["overallStatus"] == "FINISHED"

    no_token = {k: v for k, v in env.items() if "PUBLIC" not in k}
    missing = run_cli("delete-user", "u2", env=no_token)
    assert missing.returncode == 2 and "PUBLIC_API_TOKEN is not set" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    local = run_cli("delete-user", "u2", "--local-only", env=no_token)
    assert local.returncode == 0 and "2 stored row(s)" in local.stdout, "the token's absence deleted nothing"
    refused = run_cli("delete-user", "u3", env={**env, "SEGMENT_PUBLIC_API_TOKEN": "wrong-token"})
    assert refused.returncode == 1 and "401" in refused.stderr and "wrong-token" not in refused.stderr
    assert Store(store_path).events() == [], "purged here although Segment refused: run it again to file"
    assert len(api.posts()) == 1


def test_cli_regulations_lists_pages_up_to_the_limit(api: PublicAPIReceiver, store_path: str) -> None:
    client = PublicAPI(TOKEN, api.url)
    for i in range(130):
        client.create_regulation([f"u{i}"])
    env = {
        "SEGMENT_PUBLIC_API_TOKEN": TOKEN,
        "SEGMENT_PUBLIC_API_HOST": api.url,
        "SEGMENT_LOCAL_STORE": store_path,
    }
    proc = run_cli("regulations", "--limit", "120", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    ids = [json.loads(line)["id"] for line in proc.stdout.splitlines()]
    assert ids == [f"reg{i:06d}" for i in range(130, 10, -1)]
    assert [s.query["pagination.count"] for s in api.seen if s.method == "GET"] == [["100"], ["20"]]


# ---------------------------------------------------------------------- one rule, two holders
_ids = st.sampled_from(["u1", "u2", "u3", None])
_anons = st.sampled_from(["a1", "a2", "a3", None])


@settings_(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(_ids, _anons).filter(lambda r: r != (None, None)), max_size=12))
def test_the_store_and_the_queue_apply_the_same_rule(rows: list[tuple[str | None, str | None]]) -> None:
    """The store purges in SQL, the queue in Python (``erasure.Subjects``): for any mix of
    rows, both take exactly the same ones, after the same linking."""
    from segment_middleware.erasure import Subjects
    from segment_middleware.messages import Encoded, Queued

    def message(user_id: str | None, anonymous_id: str | None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "track", "event": "E", "messageId": "m"}
        if user_id is not None:
            msg["userId"] = user_id
        if anonymous_id is not None:
            msg["anonymousId"] = anonymous_id
        return msg

    with tempfile.TemporaryDirectory() as directory:
        store = Store(os.path.join(directory, "s.sqlite3"))
        store.insert([Encoded(message(*r), json.dumps(message(*r)).encode()) for r in rows], "local")
        in_memory = Subjects.of(["u1"])
        in_memory.link_queued([Queued.pack(message(*r), 0.0, None) for r in rows])
        on_disk = Subjects.of(["u1"])
        on_disk.anonymous_ids.update(store.linked_anonymous_ids(on_disk.user_ids))
        assert on_disk.anonymous_ids == in_memory.anonymous_ids
        store.purge(on_disk.user_ids, on_disk.anonymous_ids)
        left = sorted(((e.user_id, e.anonymous_id) for e in store.events()), key=str)
        kept = sorted((r for r in rows if not in_memory.covers(r[0], r[1])), key=str)
        assert left == kept
        store.close()
