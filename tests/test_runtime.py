"""The runtime: the request cycle's identity choice, the page call's end, queued calls as
plain tuples, the HTTP modules' loading, the core's imports."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from units import facts, stored

from segment_middleware.context import (
    RequestFacts,
)
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings
from segment_middleware.store import Store
from segment_middleware.tracker import Tracker


def test_cookie_ids_are_remembered_per_header_and_bounded(local_runtime: Runtime) -> None:
    import segment_middleware.core as core

    def begin(header: str) -> str | None:
        return local_runtime.begin(None, facts(), header, None).anonymous_id

    a = "theme=dark; ajs_anonymous_id=%22aaa%22"
    b = "theme=dark; ajs_anonymous_id=bbb"
    assert [begin(a), begin(b), begin(a), begin(b)] == ["aaa", "bbb", "aaa", "bbb"]
    bad = "ajs_anonymous_id=%22%ZZ"  # remembered as "no id": each request gets a fresh one
    first, second = begin(bad), begin(bad)
    assert first and second and first != second
    for i in range(core._CACHED_HEADERS + 50):
        assert begin(f"ajs_anonymous_id=id{i}") == f"id{i}"
    assert len(local_runtime._ids) <= core._CACHED_HEADERS
    huge = "x=" + "y" * core._CACHED_HEADER_MAX + "; ajs_anonymous_id=zzz"
    assert begin(huge) == "zzz" and huge not in local_runtime._ids


def test_request_tracker_from_begin_is_a_complete_tracker(local_runtime: Runtime) -> None:
    """A tracker from Runtime.begin is what Tracker(...) gives for the request's ids, facts
    and user lookup (a returning visitor: no cookie to set)."""
    resolver = lambda: "u-1"  # noqa: E731
    f = facts()
    made = local_runtime.begin(None, f, "ajs_anonymous_id=%22abc%22", None, user_resolver=resolver)
    reference = Tracker(local_runtime.sink, anonymous_id="abc", facts=f, user_resolver=resolver)
    for name in Tracker.__slots__:
        assert getattr(made, name) == getattr(reference, name), name
    assert made.user_id == "u-1" and made.enabled and not made.new_visitor


@pytest.mark.parametrize(
    ("cookie", "header", "expected", "new"),
    [
        ("ajs_anonymous_id=%22from-cookie%22", "from-header", "from-cookie", False),
        ("ajs_anonymous_id=from-cookie-raw", None, "from-cookie-raw", False),
        ("ajs_anonymous_id=%22%22", "from-header", "from-header", False),  # invalid cookie: header
        ("ajs_anonymous_id=" + "z" * 200, "%22quoted-header%22", "quoted-header", False),
        ("other=1", "from-header", "from-header", False),
        (None, "bad\x01header", None, True),
        ("ajs_anonymous_id=a%00b", "", None, True),
        (None, None, None, True),
    ],
)
def test_cookie_then_header_then_a_new_id(
    local_runtime: Runtime, cookie: str | None, header: str | None, expected: str | None, new: bool
) -> None:
    tracker = local_runtime.begin(None, facts(), cookie, header)
    assert tracker.enabled and tracker.new_visitor is new
    if expected is not None:
        assert tracker.anonymous_id == expected
    else:
        assert uuid.UUID(tracker.anonymous_id or "").version == 4
    cookie_to_set = local_runtime.end(tracker, 200, "cart")
    if new:
        assert cookie_to_set is not None and cookie_to_set.value == f"%22{tracker.anonymous_id}%22"
        assert cookie_to_set.secure  # https request
    else:
        assert cookie_to_set is None
    (page,) = stored(local_runtime)
    assert page["type"] == "page" and page["anonymousId"] == tracker.anonymous_id
    assert page["name"] == "cart" and page["properties"]["status"] == 200


def test_opted_out_and_excluded_requests_produce_nothing(store_path: str) -> None:
    rt = Runtime(
        Settings.from_sources(
            {"local_store": store_path, "flush_interval": 0.05, "honor_dnt": True}, environ={}
        )
    )
    try:
        for gpc, dnt in (("1", None), (None, "1")):
            tracker = rt.begin(None, facts(), None, None, gpc=gpc, dnt=dnt)
            assert not tracker.enabled
            tracker.track("Ignored")  # dropped silently
            with pytest.raises(ValueError):
                tracker.track("")  # misuse still raises
            assert rt.end(tracker, 200, None) is None
        assert not rt.tracks("/health/live", "GET") and rt.tracks("/cart", "GET")
        assert rt.delivery.flush(5)
        assert Store(store_path).events() == []
    finally:
        rt.delivery.shutdown(2)


def test_a_request_ends_once_however_often_an_adapter_says_so(local_runtime: Runtime) -> None:
    """The response start and the app's exception may both end a request: one page call."""
    tracker = local_runtime.begin(None, facts(), None, None)
    first = local_runtime.finish(tracker, 200, "cart", None)
    assert first is not None and first.name == "ajs_anonymous_id"  # a new visitor's cookie
    assert local_runtime.finish(tracker, 500, "cart", None) is None
    assert local_runtime.end(tracker, 500, "cart", None) is None
    assert local_runtime.delivery.flush(5)
    pages = [e for e in Store(local_runtime.settings.local_store).events() if e.message["type"] == "page"]
    assert [p.message["properties"]["status"] for p in pages] == [200]


def test_a_calls_integrations_win_over_its_events_and_the_default(tmp_path: Path) -> None:
    from segment_middleware.testing import capture

    events_integrations = {"Order Completed": {"Mixpanel": True, "Amplitude": False}}
    rt = Runtime(
        Settings(
            local_store=str(tmp_path / "s.sqlite3"),
            integrations={"All": False, "Mixpanel": False, "events": events_integrations},
        )
    )
    with capture() as events:
        rt.tracker(user_id=1).track("Order Completed", integrations={"Amplitude": True})
        rt.tracker(user_id=1).track("Other")
        rt.tracker(user_id=1).page("Order Completed")  # a page of that name is not the event
    order, other, page = events
    assert order["integrations"] == {"All": False, "Mixpanel": True, "Amplitude": True}
    assert other["integrations"] == page["integrations"] == {"All": False, "Mixpanel": False}


def test_the_core_imports_without_any_framework_or_optional_library(tmp_path: Path) -> None:
    """README: the core needs only segment-analytics-python and orjson. Every optional
    package is made unimportable in a fresh interpreter, then the core modules import."""
    blocked = ["django", "flask", "flask_login", "starlette", "fastapi", "jinja2", "werkzeug", "asgiref"]
    blocked += ["jsonschema", "yaml", "pytest", "hypothesis", "httpx"]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "import segment_middleware, segment_middleware.core, segment_middleware.wsgi\n"
        "import segment_middleware.testing, segment_middleware.cli, segment_middleware.ecommerce\n"
        "segment_middleware.tracker(user_id=1).ecommerce.order_completed('o-1')\n"
        "print('ok')"
    )
    env = {**os.environ, "SEGMENT_LOCAL_STORE": str(tmp_path / "events.sqlite3")}
    env.pop("SEGMENT_WRITE_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert (tmp_path / "events.sqlite3").exists()  # the call went to the local store at exit


def test_a_pipeline_that_posts_loads_its_http_modules_when_it_is_built(tmp_path: Path) -> None:
    """The sender's HTTP modules (requests, the SDK) load when a runtime with a write key is
    built (with the app, before a preloading server forks), not on the sender thread at the
    first post, under traffic. Without a key nothing is posted, and they are not loaded."""
    code = (
        "import sys\n"
        "from segment_middleware.core import Runtime\n"
        "from segment_middleware.settings import Settings\n"
        "Runtime(Settings.from_sources({'local_store': sys.argv[1]}, style='kwarg'))\n"
        "print('segment_middleware.http' in sys.modules, 'requests' in sys.modules)\n"
        "posting = {'local_store': sys.argv[1], 'write_key': 'k', 'host': 'http://127.0.0.1:9'}\n"
        "Runtime(Settings.from_sources(posting, style='kwarg'))\n"
        "print('segment_middleware.http' in sys.modules, 'requests' in sys.modules)\n"
    )
    out = _fresh_interpreter(code, tmp_path)
    assert out.split("\n")[:2] == ["False False", "True True"], out


def test_the_first_pipeline_that_posts_collects_once_after_loading_its_http_modules(tmp_path: Path) -> None:
    """Loading requests and the SDK leaves enough long-lived objects to make a full
    collection due within seconds of serving. The first runtime with a write key runs that
    collection itself, at start-up: once per process, and never when the app has turned
    the collector off. (Automatic collections are kept out with a huge threshold, so each
    count is ours alone.)"""
    code = (
        "import gc, sys\n"
        "gc.set_threshold(10**9)\n"
        "if sys.argv[2] == 'off':\n"
        "    gc.disable()\n"
        "from segment_middleware.core import Runtime\n"
        "from segment_middleware.settings import Settings\n"
        "def full(): return gc.get_stats()[2]['collections']\n"
        "posting = {'local_store': sys.argv[1], 'write_key': 'k', 'host': 'http://127.0.0.1:9'}\n"
        "counts = []\n"
        "for _ in range(2):\n"
        "    before = full()\n"
        "    Runtime(Settings.from_sources(posting, style='kwarg'))\n"
        "    counts.append(full() - before)\n"
        "print(*counts, 'segment_middleware.http' in sys.modules)\n"
    )
    seen = {collector: _fresh_interpreter(code, tmp_path, collector).strip() for collector in ("on", "off")}
    assert seen == {"on": "1 0 True", "off": "0 0 True"}, seen


def _fresh_interpreter(code: str, tmp_path: Path, *args: str) -> str:
    """``code``'s output in a new interpreter without SEGMENT_* variables, its first
    argument a store path in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "events.sqlite3"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_queued_call_packs_into_plain_tuples_and_back() -> None:
    """``Queued.pack`` / ``packed`` / ``unpack`` follow the class's field list (and
    ``facts_values`` the facts'): a field added to either class without them fails here."""
    import inspect

    from segment_middleware.context import facts_values
    from segment_middleware.messages import Queued

    f = facts(path="/p", query="utm_source=x", referrer="https://r.example/", forwarded_for="10.0.0.1")
    fields = [field.name for field in dataclasses.fields(Queued)]
    assert list(inspect.signature(Queued.pack).parameters) == fields
    assert facts_values(f) == tuple(getattr(f, field.name) for field in dataclasses.fields(RequestFacts))
    for item in (
        Queued(None, 1.7e9, f, name="route", anonymous_id="a", user_id="u", status=404, title="T"),
        Queued({"type": "track", "event": "E"}, 1.7e9, None),
    ):
        packed = Queued.pack(**{name: getattr(item, name) for name in fields})
        assert type(packed) is tuple and (packed[2] is None or type(packed[2]) is tuple)
        assert item.packed() == packed
        assert Queued.unpack(packed) == item


def test_a_queued_page_call_is_left_to_reference_counting(local_runtime: Runtime) -> None:
    """The page call ``Runtime.end`` queues, as it waits for a sender that builds it
    (``Queued.packed``, what ``Delivery.put`` appends then), is a tuple the cyclic collector
    stops tracking once it has looked at it twice (the facts' tuple first), long before the
    oldest generation (a queued object would be promoted there, and start full
    collections: bench/README.md); the same call as an object stays tracked."""
    import gc

    from segment_middleware.messages import Queued

    queued: list[Any] = []
    local_runtime._put = queued.append  # type: ignore[method-assign]
    tracker = local_runtime.begin(None, facts(query="utm_source=x"), "ajs_anonymous_id=%22v%22", None)
    local_runtime.end(tracker, 200, "route")
    (item,) = queued
    packed = item.packed()
    del item
    gc.collect()
    gc.collect()
    assert not gc.is_tracked(packed)
    as_object = Queued.unpack(packed)
    gc.collect()
    gc.collect()
    assert gc.is_tracked(as_object)


def test_an_encoded_message_keeps_only_what_is_read_of_it_untracked(store_path: str) -> None:
    """``prepare`` keeps, of each message, only the fields the store, the erasure and the
    logs read (``KEPT_FIELDS``), equal to the sent JSON's, in a dict the cyclic collector does
    not track: a batch waiting for its post holds no message dicts for it to promote."""
    import gc

    import orjson

    from segment_middleware.ledger import Ledger
    from segment_middleware.messages import KEPT_FIELDS, Queued, prepare

    settings = Settings.from_sources({"local_store": store_path}, environ={})
    calls = [
        Queued.pack(None, 1.7e9, facts(query="utm_source=x"), name="route", anonymous_id="a", user_id="7"),
        Queued.pack({"type": "track", "event": "E", "userId": "u", "properties": {"n": [1]}}, 1.7e9, facts()),
        Queued.pack({"type": "identify", "anonymousId": "v", "traits": {"t": {"x": 1}}}, 1.7e9, None),
    ]
    ready = prepare(calls, settings, Ledger())
    assert len(ready) == 3
    for encoded in ready:
        sent = orjson.loads(encoded.body)
        assert encoded.message == {key: sent[key] for key in KEPT_FIELDS if key in sent}
        assert {"messageId", "type", "timestamp"} <= set(encoded.message)
        assert not gc.is_tracked(encoded.message)


def test_a_malformed_queue_item_is_counted_failed_not_raised(store_path: str) -> None:
    """``prepare`` unpacks inside its guard: what is not a packed call costs that one
    message (counted, logged), never the batch or the sender."""
    from segment_middleware.ledger import Ledger
    from segment_middleware.messages import Queued, prepare

    ledger = Ledger()
    good = Queued.pack(None, 1.7e9, facts(), name="n", anonymous_id="a", status=200)
    ready = prepare(
        [("not", "a", "call"), good], Settings.from_sources({"local_store": store_path}, environ={}), ledger
    )
    assert [encoded.message["type"] for encoded in ready] == ["page"]
    assert ledger.stats()["failed"] == 1


def test_a_call_built_as_it_is_queued_holds_only_its_own_size(store_path: str) -> None:
    """A built call waits in the queue (MAX_QUEUE_SIZE of them through an outage): its body
    holds its own bytes, not the larger buffer orjson grew while writing it (4 KB behind a
    1.2 KB page call, 16 KB behind a 1.2 KB string)."""
    import tracemalloc

    rt = Runtime(Settings.from_sources({"local_store": store_path, "flush_interval": 60}, environ={}))
    try:
        ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko)"
        page = facts(query="utm_source=newsletter&utm_medium=email&ref=home", user_agent=ua)
        rt.end(rt.begin(None, page, None, None), 200, "route")  # caches and the id pool warm
        rt.delivery.queue.clear()
        n = 200
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                rt.end(rt.begin(None, page, None, None), 200, "route")
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        queued = list(rt.delivery.queue)
        assert len(queued) == n
        body = len(queued[0].body)
        # Each: its body, and under 1 KB besides (the kept fields, the Encoded, the queue's
        # share). orjson's own bytes held 4.5 KB each here.
        assert held < n * (body + 1024), (held // n, body)
    finally:
        rt.delivery.shutdown(2)


def test_a_call_is_built_as_it_is_queued_unless_the_apps_code_takes_part(store_path: str) -> None:
    """``Settings.builds_when_queued``: by default a request's page call waits in the queue
    already encoded (its request paid for the build, the sender only posts); with a
    BEFORE_SEND hook it waits as the raw call, and the hook runs on the sender thread, never
    in the request."""
    import threading

    import orjson

    from segment_middleware.messages import Encoded

    def request(rt: Runtime) -> Any:
        tracker = rt.begin(None, facts(query="utm_source=x"), None, None)
        rt.end(tracker, 200, "route")
        (queued,) = list(rt.delivery.queue)
        return queued

    rt = Runtime(Settings.from_sources({"local_store": store_path, "flush_interval": 60}, environ={}))
    try:
        queued = request(rt)
        assert isinstance(queued, Encoded)
        sent = orjson.loads(queued.body)
        assert sent["type"] == "page" and sent["name"] == "route"
        assert sent["context"]["campaign"] == {"source": "x"}
        assert rt.delivery.flush(5) and rt.delivery.stats()["stored"] == 1
    finally:
        rt.delivery.shutdown(2)

    ran_on: list[str] = []

    def hook(msg: dict[str, Any]) -> dict[str, Any]:
        ran_on.append(threading.current_thread().name)
        return msg

    settings = {"local_store": store_path, "flush_interval": 60, "before_send": [hook]}
    rt = Runtime(Settings.from_sources(settings, environ={}))
    try:
        queued = request(rt)
        assert type(queued) is tuple and ran_on == []
        assert rt.delivery.flush(5) and rt.delivery.stats()["stored"] == 1
        assert ran_on == ["segment-sender"]
    finally:
        rt.delivery.shutdown(2)
