"""The write key, the API tokens and the source secrets never show: not in a repr, a
settings error, a log line (at DEBUG, with the endpoint quoting the key back), the
command's output, nor Django's debug page (a real ``technical_500`` page, rendered by
Django with ``DEBUG = True`` for a view that raised under the middleware)."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("flask")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

from django.test import Client, override_settings  # noqa: E402
from django.views.debug import get_default_exception_reporter_filter  # noqa: E402
from helpers import WRITE_KEY  # noqa: E402
from segment_receiver import SegmentReceiver  # noqa: E402

import segment_middleware  # noqa: E402
from segment_middleware.core import Runtime  # noqa: E402
from segment_middleware.settings import SECRET_SETTINGS, Settings, SettingsError  # noqa: E402
from segment_middleware.testing import capture  # noqa: E402

BROWSER_KEY = "browser-write-key-9f8e7d6c"
PUBLIC_API_TOKEN = "sgp_hardening-public-api-token-0123"
PROFILES_TOKEN = "profiles-hardening-token-654321"
SOURCE_SECRET = "whsec_hardening-source-secret-777"
OLD_SOURCE_SECRET = "whsec_hardening-old-secret-888"
PROXY_PASSWORD = "proxy-password-31337"
SECRETS: dict[str, Any] = {
    "write_key": WRITE_KEY,
    "browser_write_key": BROWSER_KEY,
    "public_api_token": PUBLIC_API_TOKEN,
    "profiles_token": PROFILES_TOKEN,
    "source_secrets": {"payments": [SOURCE_SECRET, OLD_SOURCE_SECRET]},
}
TEXTS = {
    "WRITE_KEY": WRITE_KEY,
    "BROWSER_WRITE_KEY": BROWSER_KEY,
    "PUBLIC_API_TOKEN": PUBLIC_API_TOKEN,
    "PROFILES_TOKEN": PROFILES_TOKEN,
    "SOURCE_SECRETS (current)": SOURCE_SECRET,
    "SOURCE_SECRETS (previous)": OLD_SOURCE_SECRET,
}


def leaked(text: str, texts: dict[str, str] = TEXTS) -> list[str]:
    """The names of the secrets ``text`` holds (as themselves or as the Basic auth the
    sender makes), never the secrets: a failure must not print one."""
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    found = [name for name, secret in texts.items() if secret in text]
    return found + (["WRITE_KEY as Basic auth"] if basic in text else [])


def assert_hidden(text: str, where: object, texts: dict[str, str] = TEXTS) -> None:
    """No secret in ``text``; on failure the message names them and ``where`` (the text
    itself is not shown: it holds the secret)."""
    __tracebackhide__ = True  # pytest would show this frame's arguments, the text among them
    found = leaked(text, texts)
    assert not found, f"{found} in {where}"


def test_every_secret_row_is_marked_secret() -> None:
    assert set(SECRET_SETTINGS) == set(SECRETS), "a new secret setting needs a row in SECRETS here"


# ---------------------------------------------------------------------------- reprs
def test_reprs_of_everything_that_holds_a_secret(store_path: str) -> None:
    from flask import Flask

    from segment_middleware.asgi import SegmentMiddleware
    from segment_middleware.flask import Segment
    from segment_middleware.profiles import client_for
    from segment_middleware.public_api import PublicAPI
    from segment_middleware.wsgi import SegmentWSGIMiddleware

    every = {**SECRETS, "host": "http://127.0.0.1:9", "local_store": store_path, "space_id": "spa_1"}
    s = Settings(**every)
    rt = Runtime(s)
    try:
        flask_app = Flask("reprs")
        extension = Segment(flask_app, **every)
        objects: list[Any] = [
            s,
            rt,
            rt.delivery,
            rt.delivery.new_sender(primary=False),
            segment_middleware.tracker(user_id="u-1"),
            SegmentWSGIMiddleware(lambda e, r: [], **every),
            SegmentMiddleware(lambda scope, receive, send: None, **every),  # type: ignore[arg-type, return-value]
            extension,
            PublicAPI(PUBLIC_API_TOKEN, "http://127.0.0.1:9"),
            client_for(s),
        ]
        for obj in objects:
            assert_hidden(repr(obj), f"repr of {type(obj).__name__}")
            assert_hidden(str(obj), f"str of {type(obj).__name__}")
    finally:
        rt.delivery.shutdown(2)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("secret_row", sorted(SECRETS))
def test_a_secret_pasted_into_another_setting_is_not_echoed(secret_row: str) -> None:
    """A secret in the wrong setting (a host, a cookie name): the error names the setting
    and never quotes the value."""
    value = SECRETS[secret_row]
    text = value if isinstance(value, str) else value["payments"][0]
    for wrong in ("host", "anonymous_id_cookie", "cdn_url", "collect_prefix"):
        with pytest.raises(SettingsError) as info:
            Settings(**{secret_row: value, wrong: text + " !"})
        assert_hidden(str(info.value), (secret_row, wrong))
        assert wrong in str(info.value)


# ---------------------------------------------------------------------------- logs
def test_no_log_line_carries_the_key_even_when_the_endpoint_quotes_it(
    receiver: SegmentReceiver, store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG (the package's, the SDK's, urllib3's) while batches fail with
    an answer whose text quotes the key and the Authorization header back."""
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    echo = {"code": "invalid_request", "message": f"bad key {WRITE_KEY} (Authorization: Basic {basic})"}
    receiver.fail_with(400, body=echo)
    caplog.set_level(logging.DEBUG)
    rt = Runtime(
        Settings(
            write_key=WRITE_KEY, host=receiver.url, local_store=store_path, flush_interval=0.05, max_retries=1
        )
    )
    try:
        tracker = segment_middleware.tracker(user_id="u-1")
        tracker.track("Logged Event", {"k": 1})
        rt.sink({"type": "track", "event": "Logged Event", "userId": "u-1", "properties": {}}, None, 0.0)
        rt.delivery.flush(10)
        receiver.fail_with(500, body=echo)
        rt.sink({"type": "track", "event": "Logged Event", "userId": "u-1", "properties": {}}, None, 0.0)
        rt.delivery.flush(10)
    finally:
        rt.delivery.shutdown(5)
    assert receiver.requests, "the failing endpoint was never asked: the test proves nothing"
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "400" in text or "invalid_request" in text or "rejected" in text.lower(), "no failure was logged"
    assert_hidden(text, "the log records")


# ---------------------------------------------------------------------------- the command
@pytest.mark.parametrize("api_token", [PUBLIC_API_TOKEN, "sgp_another-workspace-token"])
def test_the_command_never_prints_the_key_or_tokens(
    receiver: SegmentReceiver, tmp_path: Path, api_token: str
) -> None:
    """Every command, with the key and the token in the environment and as flags, against
    endpoints that refuse (the ingest endpoint's connection; the Public API's 401 when the
    token is another workspace's) and that accept."""
    from public_api_receiver import PublicAPIReceiver

    cli = str(Path(sys.executable).parent / "segment-middleware")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_") and k != "DJANGO_SETTINGS_MODULE"
    }
    with PublicAPIReceiver(api_token) as api:
        env |= {
            "SEGMENT_WRITE_KEY": WRITE_KEY,
            "SEGMENT_PUBLIC_API_TOKEN": PUBLIC_API_TOKEN,
            "SEGMENT_HOST": "http://127.0.0.1:9",  # refused
            "SEGMENT_PUBLIC_API_HOST": api.url,
            "SEGMENT_LOCAL_STORE": str(tmp_path / "events.sqlite3"),
        }
        runs = [
            ["check"],
            ["track", "u-1", "CLI Event", "{}"],
            ["replay", "--write-key", WRITE_KEY, "--host", "http://127.0.0.1:9"],
            ["replay", "--write-key", WRITE_KEY + " bad", "--host", receiver.url],
            ["regulations"],
            ["delete-user", "u-1"],
            ["events", "--json"],
        ]
        outputs = []
        for number, argv in enumerate(runs):
            done = subprocess.run(
                [cli, *argv], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
            )
            outputs.append(done.stdout + done.stderr)
            # Named by its command and position: its arguments may hold the key.
            assert_hidden(done.stdout + done.stderr, f"the output of run {number}, {argv[0]}")
        assert len(api.seen) >= 2  # the Public API was asked (and answered 200 or 401)
    assert any("write key" in out for out in outputs)  # it did talk about the key


# ---------------------------------------------------------------------------- Django's debug page
@pytest.fixture
def debug_page() -> Iterator[Any]:
    """``get(path, **segment)``: the page Django's ``DEBUG = True`` renders for a view that
    raised under the middleware, with ``settings.SEGMENT`` full of secrets."""
    overrides: list[Any] = []

    def get(path: str = "/boom", filter_path: str | None = None, **segment: Any) -> str:
        extra = {} if filter_path is None else {"DEFAULT_EXCEPTION_REPORTER_FILTER": filter_path}
        override = override_settings(
            DEBUG=True,
            SEGMENT={key.upper(): value for key, value in segment.items()},
            ROOT_URLCONF="djapp.matrix_urls",
            ALLOWED_HOSTS=["*"],
            **extra,
        )
        override.enable()
        overrides.append(override)
        # Django keeps the first filter it made: forget it, so this one is used.
        get_default_exception_reporter_filter.cache_clear()  # type: ignore[attr-defined]
        with capture():
            response = Client(raise_request_exception=False).get(path, headers={"user-agent": "debug-test"})
        assert response.status_code == 500
        html = response.content.decode()
        assert "matrix boom" in html and "SegmentMiddleware" in html  # the real page, through us
        return html

    yield get
    for override in reversed(overrides):
        override.disable()
    get_default_exception_reporter_filter.cache_clear()  # type: ignore[attr-defined]


SUBSTITUTE = "********************"


def test_django_debug_page_masks_every_secret_of_segment(debug_page: Any) -> None:
    """Django's own filter walks ``SEGMENT`` key by key: every secret row's name matches
    its pattern (KEY, TOKEN, SECRET), nested lists included."""
    html = debug_page(**SECRETS, host="http://127.0.0.1:9", space_id="spa_1")
    assert_hidden(html, "the debug page")
    assert f"&#x27;WRITE_KEY&#x27;: &#x27;{SUBSTITUTE}&#x27;" in html
    assert f"&#x27;SOURCE_SECRETS&#x27;: &#x27;{SUBSTITUTE}&#x27;" in html
    assert "spa_1" in html  # what is not secret is still shown


def test_credentials_in_host_need_the_packages_filter(debug_page: Any) -> None:
    """A password in HOST (a proxy's Basic auth) is shown by Django's filter, whose pattern
    the name HOST does not match; ``SegmentExceptionReporterFilter`` masks it and keeps
    the rest of the URL."""
    host = f"http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:9"
    plain = debug_page(**SECRETS, host=host)
    assert PROXY_PASSWORD in plain  # why the filter exists
    masked = debug_page(
        **SECRETS, host=host, filter_path="segment_middleware.django.debug.SegmentExceptionReporterFilter"
    )
    assert_hidden(masked, "the debug page", {**TEXTS, "PROXY_PASSWORD": PROXY_PASSWORD})
    assert f"http://proxy-user:{SUBSTITUTE}@127.0.0.1:9" in masked


def test_the_filter_masks_secret_rows_in_any_mapping() -> None:
    from types import MappingProxyType

    from segment_middleware.django.debug import SegmentExceptionReporterFilter

    shown = SegmentExceptionReporterFilter().cleanse_setting(
        "SEGMENT", MappingProxyType({"write_key": WRITE_KEY, "HOST": "https://api.segment.io", "FLUSH_AT": 5})
    )
    assert shown == {"write_key": SUBSTITUTE, "HOST": "https://api.segment.io", "FLUSH_AT": 5}
