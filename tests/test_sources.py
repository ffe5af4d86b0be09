"""Source functions (``segment_middleware.sources``): webhooks verified, then turned into
Segment calls, all or nothing.

``handle`` directly (with ``testing.capture()``, so "nothing sent" is exact), the
signature formats against published vectors and a reference signer written from the
providers' documentation, and the whole path under a real gunicorn worker to the
Segment-compatible receiver (``apps/sources_app.py`` stands in for the collection mount).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from helpers import WRITE_KEY
from hypothesis import given
from hypothesis import strategies as st
from segment_receiver import SegmentReceiver
from servers import ROOT, Server, gunicorn
from units import QUICK
from visits import BROWSER

from segment_middleware import sources
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings, SettingsError
from segment_middleware.signatures import GitHubSignature, SignatureError, StripeSignature
from segment_middleware.sources import Webhook, handle, source
from segment_middleware.testing import capture

SECRET = "whsec_test-only-5ecret"
BODY_MARKER = "card-4242-private"  # in every payload: must never reach a log


# ---------------------------------------------------------------------- reference signers
def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def stripe_header(body: bytes, secret: str = SECRET, t: int | None = None) -> str:
    """Stripe's documented scheme: v1 = HMAC-SHA256(secret, "<t>.<body>"), hex."""
    t = int(time.time()) if t is None else t
    return f"t={t},v1={hmac_hex(secret, str(t).encode() + b'.' + body)}"


def payload(**extra: Any) -> bytes:
    return orjson.dumps({"type": "charge.succeeded", "note": BODY_MARKER, **extra})


# ---------------------------------------------------------------------- fixtures
@pytest.fixture
def runtime(local_runtime: Runtime) -> Runtime:
    return local_runtime


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Names a test registers; unregistered after it."""
    names: list[str] = []
    yield names
    for name in names:
        sources.unregister(name)


def register(names: list[str], name: str, function: Any, **kwargs: Any) -> None:
    source(name, **kwargs)(function)
    names.append(name)


def order_completed(body: Any, webhook: Webhook) -> None:
    webhook.tracker(user_id="u-1").track("Order Completed", {"order_id": "o-1"})


# ---------------------------------------------------------------------- plain HMAC
def test_a_valid_signature_runs_the_function_and_queues_its_calls(
    runtime: Runtime, registered: list[str]
) -> None:
    register(registered, "plain", order_completed, secret=SECRET)
    body = payload()
    with capture() as events:
        status, answer = handle(runtime, "plain", body, {"x-signature": hmac_hex(SECRET, body)})
    assert (status, answer) == (200, {"success": True, "sent": 1})
    sent = events.assert_sent("track", event="Order Completed", userId="u-1", properties={"order_id": "o-1"})
    assert "ip" not in sent["context"] and "page" not in sent["context"], "no request context: not a visitor"
    assert orjson.dumps(answer)


def test_a_bad_signature_is_401_sends_nothing_and_logs_without_the_body(
    runtime: Runtime, registered: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    register(registered, "plain", order_completed, secret=SECRET)
    body = payload()
    wrong = [
        {"x-signature": hmac_hex("another-secret", body)},
        {"x-signature": hmac_hex(SECRET, body + b" ")},  # the raw bytes, not the JSON, are signed
        {"x-signature": "zz" * 32},
        {"x-signature": "é" * 64},
        {},
    ]
    with caplog.at_level(logging.WARNING, "segment_middleware"), capture() as events:
        answers = [handle(runtime, "plain", body, headers) for headers in wrong]
    assert answers == [(401, {"success": False, "error": "bad signature"})] * len(wrong)
    events.assert_nothing_sent()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len(wrong) and "no x-signature header" in refused[-1]
    assert BODY_MARKER not in caplog.text and SECRET not in caplog.text


def test_header_names_are_matched_in_any_case(runtime: Runtime, registered: list[str]) -> None:
    register(registered, "plain", order_completed, secret=SECRET, header="X-Shop-Signature")
    body = payload()
    with capture() as events:
        assert handle(runtime, "plain", body, {"X-SHOP-Signature": hmac_hex(SECRET, body).upper()})[0] == 200
    assert len(events) == 1


def test_a_signed_timestamp_bounds_replays(runtime: Runtime, registered: list[str]) -> None:
    register(
        registered, "stamped", order_completed, secret=SECRET, timestamp_header="X-Timestamp", tolerance=60
    )
    body, now = payload(), 1_800_000_000

    def signed(t: int, stamp: int | None = None) -> dict[str, str]:
        return {
            "x-signature": hmac_hex(SECRET, f"{t}.".encode() + body),
            "x-timestamp": str(t if stamp is None else stamp),
        }

    with capture() as events:
        assert handle(runtime, "stamped", body, signed(now - 59), now=now)[0] == 200
        assert handle(runtime, "stamped", body, signed(now + 59), now=now)[0] == 200
        assert handle(runtime, "stamped", body, signed(now - 61), now=now) == (
            401,
            {"success": False, "error": "stale timestamp"},
        )
        assert handle(runtime, "stamped", body, signed(now + 61), now=now) == (
            401,
            {"success": False, "error": "stale timestamp"},
        )
        # a fresh timestamp on an old signature: the timestamp is part of what is signed
        assert (
            handle(runtime, "stamped", body, signed(now - 3600, stamp=now), now=now)[1]["error"]
            == "bad signature"
        )
        assert handle(runtime, "stamped", body, {**signed(now), "x-timestamp": "soon"}, now=now)[0] == 401
        unsigned_time = {"x-signature": hmac_hex(SECRET, body)}
        assert handle(runtime, "stamped", body, unsigned_time, now=now)[0] == 401
    assert len(events) == 2


# ---------------------------------------------------------------------- Stripe and GitHub
def test_stripe_signatures(runtime: Runtime, registered: list[str]) -> None:
    register(registered, "stripe", order_completed, secret=SECRET, scheme="stripe")
    body, now = payload(), 1_800_000_000
    good = stripe_header(body, t=now)
    t, v1 = good.split(",")
    cases = {
        good: 200,
        f"{t},v1={'0' * 64},{v1},v0={'1' * 64}": 200,  # a secret being rolled: any v1 may match
        f" {t} , {v1} ": 200,
        stripe_header(body, t=now - 301): 401,  # Stripe's default tolerance is 300 s
        stripe_header(body, "whsec_other", t=now): 401,
        f"{t},v0={v1[3:]}": 401,  # only v1 counts
        v1: 401,  # no timestamp
        f"{t},{t},{v1}": 401,
        t: 401,
        "garbage": 401,
    }
    with capture() as events:
        got = {
            header: handle(runtime, "stripe", body, {"stripe-signature": header}, now=now)[0]
            for header in cases
        }
    assert got == cases
    assert len(events) == 3
    with pytest.raises(SignatureError, match="stripe-signature"):
        StripeSignature().verify(body, {}, [SECRET.encode()], now)


def test_github_signature_from_githubs_documentation(runtime: Runtime, registered: list[str]) -> None:
    """The example of GitHub's "Validating webhook deliveries" page."""
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    documented = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    GitHubSignature().verify(body, {"x-hub-signature-256": documented}, [secret.encode()], 0)
    for wrong in (documented.replace("sha256=", "sha1="), documented[:-1] + "0", documented[7:]):
        with pytest.raises(SignatureError):
            GitHubSignature().verify(body, {"x-hub-signature-256": wrong}, [secret.encode()], 0)

    def starred(payload: Any, webhook: Webhook) -> None:
        webhook.tracker(anonymous_id=webhook.headers["x-github-delivery"]).track(
            "Starred", {"event": webhook.headers["x-github-event"], "repo": payload["repo"]}
        )

    register(registered, "gh", starred, secret=secret, scheme="github")
    body = orjson.dumps({"repo": "octo/cat"})
    headers = {
        "X-Hub-Signature-256": "sha256=" + hmac_hex(secret, body),
        "X-GitHub-Event": "star",
        "X-GitHub-Delivery": "d-1",
    }
    with capture() as events:
        assert handle(runtime, "gh", body, headers) == (200, {"success": True, "sent": 1})
    events.assert_sent("track", anonymousId="d-1", properties={"event": "star", "repo": "octo/cat"})


# ---------------------------------------------------------------------- all or nothing
def test_a_function_that_raises_is_500_and_sends_none_of_its_calls(
    runtime: Runtime, registered: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    kept: list[Any] = []

    def half_done(payload: Any, webhook: Webhook) -> None:
        tracker = webhook.tracker(user_id="u-1")
        kept.append(tracker)
        tracker.track("Step One")
        tracker.identify(traits={"plan": "pro"})
        raise KeyError("customer")

    register(registered, "half", half_done, secret=SECRET)
    body = payload()
    with caplog.at_level(logging.ERROR, "segment_middleware"), capture() as events:
        assert handle(runtime, "half", body, {"x-signature": hmac_hex(SECRET, body)}) == (
            500,
            {"success": False, "error": "source function failed"},
        )
        with pytest.raises(RuntimeError, match="after the function returned"):
            kept[0].track("Too Late")
    events.assert_nothing_sent()
    (record,) = [r for r in caplog.records if "raised" in r.getMessage()]
    assert "2 call(s) were not sent" in record.getMessage() and record.exc_info is not None


def test_a_plan_violation_in_raise_mode_fails_the_function_before_anything_is_queued(
    tmp_path: Path, registered: list[str]
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"events": {"Order Completed": {"type": "object", "required": ["order_id"]}}}')
    rt = Runtime(
        Settings(local_store=str(tmp_path / "s.sqlite3"), tracking_plan=str(plan), plan_violations="raise")
    )
    try:

        def two_calls(payload: Any, webhook: Webhook) -> None:
            webhook.tracker(user_id="u-1").track("Order Completed", {"order_id": "o-1"})
            webhook.tracker(user_id="u-1").track("Order Completed", {"total": 3})

        register(registered, "planned", two_calls, secret=SECRET)
        body = payload()
        with capture() as events:
            assert handle(rt, "planned", body, {"x-signature": hmac_hex(SECRET, body)})[0] == 500
        events.assert_nothing_sent()
    finally:
        rt.delivery.shutdown(2)


def test_other_answers(runtime: Runtime, registered: list[str]) -> None:
    register(registered, "small", order_completed, secret=SECRET, max_body=100)
    ok_but_not_json = b"not json {"
    with capture() as events:
        assert handle(runtime, "nobody", b"{}", {}) == (404, {"success": False, "error": "no such source"})
        assert handle(runtime, "small", b"x" * 101, {"x-signature": hmac_hex(SECRET, b"x" * 101)})[0] == 413
        assert handle(
            runtime, "small", ok_but_not_json, {"x-signature": hmac_hex(SECRET, ok_but_not_json)}
        ) == (
            400,
            {"success": False, "error": "body is not JSON"},
        )
    events.assert_nothing_sent()


def test_a_function_may_send_nothing(runtime: Runtime, registered: list[str]) -> None:
    register(registered, "quiet", lambda payload, webhook: None, secret=SECRET)
    with capture() as events:
        assert handle(runtime, "quiet", b"[]", {"x-signature": hmac_hex(SECRET, b"[]")}) == (
            200,
            {"success": True, "sent": 0},
        )
    events.assert_nothing_sent()


# ---------------------------------------------------------------------- where the secret comes from
def test_secret_sources_in_order(
    tmp_path: Path, registered: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    body = payload()
    rotating = ["whsec_new", SECRET]

    register(registered, "given", order_completed, secret=lambda: rotating)
    register(registered, "from-settings", order_completed)
    register(registered, "from.env", order_completed)
    rt = Runtime(Settings(local_store=str(tmp_path / "s.sqlite3"), source_secrets={"from-settings": SECRET}))
    try:
        monkeypatch.setenv("SEGMENT_SOURCE_FROM_ENV_SECRET", SECRET)
        monkeypatch.setenv("SEGMENT_SOURCE_FROM_SETTINGS_SECRET", "whsec_loses_to_the_setting")
        with capture() as events:
            for name in ("given", "from-settings", "from.env"):
                assert handle(rt, name, body, {"x-signature": hmac_hex(SECRET, body)})[0] == 200, name
            rotating.pop()  # rotated out: the callable is asked on each request
            assert handle(rt, "given", body, {"x-signature": hmac_hex(SECRET, body)})[0] == 401
            monkeypatch.delenv("SEGMENT_SOURCE_FROM_ENV_SECRET")
            with caplog.at_level(logging.ERROR, "segment_middleware"):
                assert handle(rt, "from.env", body, {"x-signature": hmac_hex(SECRET, body)}) == (
                    500,
                    {"success": False, "error": "source not configured"},
                )
        assert len(events) == 3
        assert "SEGMENT_SOURCE_FROM_ENV_SECRET" in caplog.text and "SOURCE_SECRETS['from.env']" in caplog.text
    finally:
        rt.delivery.shutdown(2)


def test_the_source_secrets_setting_is_validated_without_echoing_secrets() -> None:
    assert Settings(source_secrets={"a": "s1", "b": ["s2", "s3"]}).source_secrets == {
        "a": ("s1",),
        "b": ("s2", "s3"),
    }
    assert Settings().source_secrets == {}
    for bad in ({"a": ""}, {"a": []}, {"a": ["whsec_visible", 3]}, {1: "whsec_visible"}, ["whsec_visible"]):
        with pytest.raises(SettingsError, match=r"^source_secrets: ") as info:
            Settings(source_secrets=bad)
        assert "whsec_visible" not in str(info.value)
    assert "whsec" not in repr(Settings(source_secrets={"a": "whsec_visible"}))


def test_a_secret_callable_that_fails_is_500_and_logs_only_its_type(
    runtime: Runtime, registered: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    def vault() -> str:
        raise LookupError(f"vault said {SECRET}")

    register(registered, "vaulted", order_completed, secret=vault)
    body = payload()
    with caplog.at_level(logging.ERROR, "segment_middleware"), capture() as events:
        assert handle(runtime, "vaulted", body, {"x-signature": hmac_hex(SECRET, body)}) == (
            500,
            {"success": False, "error": "source not configured"},
        )
    events.assert_nothing_sent()
    assert "secret= raised LookupError" in caplog.text and SECRET not in caplog.text


def test_registration_mistakes_fail_at_import(registered: list[str]) -> None:
    register(registered, "taken", order_completed, secret=SECRET)
    register(registered, "taken", order_completed, secret=SECRET)  # the same function again: a re-import

    def other(payload: Any, webhook: Webhook) -> None: ...

    async def coroutine(payload: Any, webhook: Webhook) -> None: ...

    with pytest.raises(ValueError, match=r"already registered by test_sources\.order_completed"):
        source("taken")(other)
    with pytest.raises(TypeError, match="not async def"):
        source("async")(coroutine)
    with pytest.raises(ValueError, match="source name"):
        source("a/b")
    with pytest.raises(ValueError, match="scheme must be one of"):
        source("x", scheme="md5")
    with pytest.raises(TypeError, match="timestamp_header"):
        source("x", scheme="stripe", timestamp_header="X-Time")
    with pytest.raises(ValueError, match="non-empty"):
        source("x", secret="")
    with pytest.raises(ValueError, match="max_body"):
        source("x", max_body=0)
    assert set(sources.registered()) >= {"taken"} and "async" not in sources.registered()


def test_a_verifier_of_your_own(runtime: Runtime, registered: list[str]) -> None:
    class Token:
        header = "authorization"

        def verify(self, body: bytes, headers: Any, secrets: Any, now: float) -> None:
            if not any(
                hmac.compare_digest(headers.get("authorization", "").encode(), b"Bearer " + s)
                for s in secrets
            ):
                raise SignatureError("wrong bearer token")

    register(registered, "token", order_completed, secret=SECRET, scheme=Token())
    with capture() as events:
        assert handle(runtime, "token", b"{}", {"Authorization": f"Bearer {SECRET}"})[0] == 200
        assert handle(runtime, "token", b"{}", {"Authorization": "Bearer nope"})[0] == 401
    assert len(events) == 1


# ---------------------------------------------------------------------- arbitrary input
@QUICK
@given(
    body=st.binary(max_size=300),
    headers=st.dictionaries(
        st.sampled_from(["x-signature", "stripe-signature", "x-hub-signature-256", "x-timestamp", "other"]),
        st.text(max_size=80),
    ),
    name=st.sampled_from(["h", "s", "g", "t", "missing"]),
)
def test_unsigned_input_is_never_a_500_and_never_sends(
    runtime: Runtime, body: bytes, headers: dict[str, str], name: str
) -> None:
    """Forged requests (anything without the secret): 401 or 404, nothing sent, no 500."""
    for short, kw in {"h": {}, "s": {"scheme": "stripe"}, "g": {"scheme": "github"}}.items():
        if short not in sources.registered():
            source(short, secret=SECRET, **kw)(order_completed)
    if "t" not in sources.registered():
        source("t", secret=SECRET, timestamp_header="X-Timestamp")(order_completed)
    with capture() as events:
        status, answer = handle(runtime, name, body, headers)
    assert status == (404 if name == "missing" else 401)
    assert orjson.dumps(answer)
    events.assert_nothing_sent()


@QUICK
@given(body=st.binary(max_size=300), t=st.integers(min_value=0, max_value=10**11))
def test_a_genuine_signature_over_any_body_verifies(runtime: Runtime, body: bytes, t: int) -> None:
    """Whatever the bytes, the provider's own signature is accepted: 200 for JSON, 400 else."""
    if "s" not in sources.registered():
        source("s", secret=SECRET, scheme="stripe")(order_completed)
    try:
        orjson.loads(body)
        expected = 200
    except orjson.JSONDecodeError:
        expected = 400
    with capture():
        assert (
            handle(runtime, "s", body, {"stripe-signature": stripe_header(body, t=t)}, now=t)[0] == expected
        )


@pytest.fixture(autouse=True, scope="module")
def _forget_property_sources() -> Iterator[None]:
    yield
    for name in ("h", "s", "g", "t"):
        sources.unregister(name)


# ---------------------------------------------------------------------- under gunicorn
@pytest.mark.parametrize("route", ["/sources/", "/segment/sources/"], ids=["handle", "wsgi-mount"])
def test_sources_under_gunicorn(receiver: SegmentReceiver, tmp_path: Path, route: str) -> None:
    """A tiny WSGI app of ours under a real gunicorn worker, calling ``handle`` itself or
    through the package's WSGI collection mount: the valid webhooks' calls reach the
    receiver (after SIGTERM's flush), the rest none of theirs, and the body of a refused
    request is in no log."""
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_LOCAL_STORE": str(tmp_path / "spool.sqlite3"),
        "SEGMENT_SOURCE_PAYMENTS_SECRET": SECRET,
        "SEGMENT_SOURCE_GITHUB_SECRET": "gh-secret",
        "SEGMENT_SOURCE_BROKEN_SECRET": SECRET,
        "PYTHONPATH": str(ROOT / "tests" / "apps"),
        "TEST_TMP": str(tmp_path),
    }
    server: Server = gunicorn("sources_app:app", env, "--workers", "1", "--worker-class", "gthread")
    try:
        server.wait_ready()

        def post(name: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            answer = server.request(
                "POST", f"{route}{name}", {"Content-Type": "application/json", **headers}, body
            )
            return answer.status, orjson.loads(answer.body)

        charge = orjson.dumps(
            {
                "id": "evt_1",
                "type": "charge.succeeded",
                "data": {
                    "object": {
                        "amount": 2599,
                        "currency": "usd",
                        "metadata": {"user_id": "42", "order_id": "o-7", "note": BODY_MARKER},
                    }
                },
            }
        )
        assert post("payments", charge, {"Stripe-Signature": stripe_header(charge)}) == (
            200,
            {"success": True, "sent": 1},
        )
        assert post("payments", charge, {"Stripe-Signature": stripe_header(charge, "whsec_wrong")})[0] == 401
        stale = stripe_header(charge, t=int(time.time()) - 3600)
        assert post("payments", charge, {"Stripe-Signature": stale}) == (
            401,
            {"success": False, "error": "stale timestamp"},
        )
        star = orjson.dumps({"sender": {"id": 7}, "repository": {"full_name": "octo/cat"}})
        assert post(
            "github",
            star,
            {"X-Hub-Signature-256": "sha256=" + hmac_hex("gh-secret", star), "X-GitHub-Event": "star"},
        ) == (200, {"success": True, "sent": 1})
        now = str(int(time.time()))
        signed = {"X-Timestamp": now, "X-Signature": hmac_hex(SECRET, now.encode() + b"." + charge)}
        assert post("broken", charge, signed) == (500, {"success": False, "error": "source function failed"})
        assert post("nobody", charge, {})[0] == 404
        assert server.stop() == 0
    finally:
        server.kill()
    tracks = [(m["event"], m.get("userId"), m["properties"]) for m in receiver.messages]
    assert tracks == [
        ("Order Completed", "42", {"order_id": "o-7", "total": 25.99, "currency": "usd"}),
        ("Repository Starred", "7", {"repository": "octo/cat"}),
    ]
    log = server.output()
    assert "request refused" in log and "signed timestamp" in log and "RuntimeError" in log
    assert BODY_MARKER not in log and SECRET not in log


# ---------------------------------------------------------------------- the Django shop's example
EXAMPLE = ROOT / "example_django"


def manage(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_shops_charge_succeeded_webhook_becomes_order_completed(
    receiver: SegmentReceiver, tmp_path: Path
) -> None:
    """example_django under gunicorn: alice checks out (the order is placed, not paid:
    ``Payment Info Entered``), then ``manage.py pay_order`` plays the payment provider and
    posts a Stripe-signed ``charge.succeeded`` to ``/segment/sources/payments``: the order is
    paid and ``Order Completed`` goes out as alice, once, however often it is delivered; a
    forged delivery is refused."""
    env = {
        "SHOP_DB": str(tmp_path / "shop.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "DJANGO_DEBUG": "0",
        "PAYMENTS_WEBHOOK_SECRET": SECRET,
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_FLUSH_INTERVAL": "60",
        "SEGMENT_LOCAL_STORE": str(tmp_path / "spool.sqlite3"),
        "TEST_TMP": str(tmp_path),
    }
    for command in (["migrate", "--noinput"], ["seed_shop"]):
        assert manage(env, *command).returncode == 0
    server = gunicorn("shop.wsgi:application", env, chdir=EXAMPLE)
    try:
        server.wait_ready()
        form = server.request("GET", "/signin/", BROWSER)
        (csrf,) = [c.split(";", 1)[0] for c in form.cookies() if c.startswith("csrftoken=")]
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.body)
        assert token is not None
        signin = server.request(
            "POST",
            "/signin/",
            {**BROWSER, "Cookie": csrf, "Content-Type": "application/x-www-form-urlencoded"},
            urlencode(
                {"username": "alice", "password": "alice-password", "csrfmiddlewaretoken": token[1]}
            ).encode(),
        )
        assert signin.status == 302, server.output()
        jar = {c.split("=", 1)[0]: c.split(";", 1)[0] for c in signin.cookies()}
        csrf = jar.get("csrftoken", csrf)
        user = {**BROWSER, "Cookie": f"{jar['sessionid']}; {csrf}", "X-CSRFToken": csrf.split("=", 1)[1]}
        for slug in ("ceramic-mug", "ceramic-mug", "espresso-beans"):
            assert server.request("POST", f"/cart/add/{slug}/", user).status == 302
        placed = server.request("POST", "/checkout/", user)
        assert placed.status == 302, server.output()
        order_id = dict(placed.headers)["Location"].rstrip("/").rsplit("/", 1)[1]

        url = f"http://127.0.0.1:{server.port}"
        paid = manage(env, "pay_order", order_id, "--url", url)
        assert paid.returncode == 0 and '"sent":1' in paid.stdout, paid.stdout + paid.stderr
        again = manage(env, "pay_order", order_id, "--url", url)  # the provider retries
        assert again.returncode == 0 and '"sent":0' in again.stdout, again.stdout + again.stderr
        forged = manage(
            {**env, "PAYMENTS_WEBHOOK_SECRET": "whsec_guessed"}, "pay_order", order_id, "--url", url
        )
        assert forged.returncode != 0 and "401" in forged.stdout
        assert server.stop() == 0
    finally:
        server.kill()

    (identify,) = [m for m in receiver.messages if m["type"] == "identify"]
    alice = identify["userId"]
    (entered,) = [m for m in receiver.messages if m.get("event") == "Payment Info Entered"]
    assert entered["userId"] == alice and entered["properties"]["order_id"] == order_id
    (completed,) = [m for m in receiver.messages if m.get("event") == "Order Completed"]
    assert completed["userId"] == alice and "anonymousId" not in completed
    props = completed["properties"]
    assert (props["order_id"], props["total"], props["revenue"], props["currency"]) == (
        order_id,
        48.5,
        48.5,
        "USD",
    )
    assert sorted((p["sku"], p["quantity"], p["price"]) for p in props["products"]) == [
        ("COF-ESP-1000", 1, 24.5),
        ("KIT-MUG-350", 2, 12.0),
    ]
    assert "ip" not in completed["context"], "the provider's request is not the customer's"
    pages = [m["properties"]["path"] for m in receiver.messages if m["type"] == "page"]
    assert "/checkout/" in pages and not any(p.startswith("/segment/") for p in pages), pages


# ---------------------------------------------------------------------- the Flask and ASGI mounts
def test_through_the_flask_blueprint_and_the_asgi_router(tmp_path: Path, registered: list[str]) -> None:
    """The same webhook through ``collect_blueprint`` and ``collect_router`` (in process):
    the mount hands the raw body and headers over unchanged, and answers what ``handle``
    answers."""
    pytest.importorskip("flask")
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from flask import Flask

    from segment_middleware.asgi import SegmentMiddleware, collect_router
    from segment_middleware.flask import Segment, collect_blueprint

    register(registered, "payments", order_completed, secret=SECRET, scheme="stripe")
    body = payload()
    good = {"Stripe-Signature": stripe_header(body), "Content-Type": "application/json"}
    bad = {**good, "Stripe-Signature": stripe_header(body, "whsec_wrong")}

    flask_app = Flask(__name__)
    flask_app.config["SEGMENT_LOCAL_STORE"] = str(tmp_path / "flask.sqlite3")
    Segment(flask_app)
    flask_app.register_blueprint(collect_blueprint, url_prefix="/segment")
    fastapi_app = FastAPI()
    fastapi_app.add_middleware(SegmentMiddleware, local_store=str(tmp_path / "asgi.sqlite3"))
    fastapi_app.include_router(collect_router, prefix="/segment")

    flask_client = flask_app.test_client()
    with TestClient(fastapi_app) as asgi_client:

        def via_flask(headers: dict[str, str]) -> tuple[int, Any]:
            answer = flask_client.post("/segment/sources/payments", data=body, headers=headers)
            return answer.status_code, orjson.loads(answer.data)

        def via_asgi(headers: dict[str, str]) -> tuple[int, Any]:
            answer = asgi_client.post("/segment/sources/payments", content=body, headers=headers)
            return answer.status_code, orjson.loads(answer.content)

        for post in (via_flask, via_asgi):
            with capture() as events:
                assert post(good) == (200, {"success": True, "sent": 1})
                status, answer = post(bad)
            assert (status, answer["error"]) == (401, "bad signature")
            events.assert_sent("track", event="Order Completed", userId="u-1")
            assert len(events) == 1, "the mount's own request makes no page call"
