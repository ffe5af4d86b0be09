"""SegmentWSGIMiddleware in process, driven by wsgiref's own validator and test utilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver

import segment_middleware
from segment_middleware.wsgi import SegmentWSGIMiddleware

produced: list[int] = []
closed: list[bool] = []


class Body:
    """A streamed body that records what it produced and that the server closed it."""

    def __iter__(self) -> Iterator[bytes]:
        for i in range(3):
            produced.append(i)
            yield f"chunk {i}\n".encode()

    def close(self) -> None:
        closed.append(True)


def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise ZeroDivisionError("from the app")
    tracker = segment_middleware.current()
    assert tracker is environ["segment.tracker"]
    tracker.track("Seen", {"path": path})
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    if path == "/late-error":
        try:
            raise OSError("disk")
        except OSError:
            import sys

            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"later"]
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"made"]


@pytest.fixture
def app(receiver: SegmentReceiver, tmp_path: Path) -> Iterator[SegmentWSGIMiddleware]:
    wrapped = SegmentWSGIMiddleware(
        inner,
        user_id=lambda environ: environ.get("REMOTE_USER"),
        write_key=WRITE_KEY,
        host=receiver.url,
        flush_interval=60,
        local_store=str(tmp_path / "store.sqlite3"),
    )
    yield wrapped
    wrapped.runtime.delivery.shutdown(2)


def call(app: Any, path: str, **environ: Any) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
    env: dict[str, Any] = {"SCRIPT_NAME": "", "PATH_INFO": path, **environ}
    setup_testing_defaults(env)
    got: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[..., Any]:
        got["status"], got["headers"] = status, headers
        return lambda data: None

    body = validator(app)(env, start_response)
    return got["status"], got["headers"], body


def flushed(app: SegmentWSGIMiddleware, receiver: SegmentReceiver) -> list[dict[str, Any]]:
    assert app.runtime.delivery.flush(5)
    return receiver.messages


def test_status_cookie_user_and_tracker(app: SegmentWSGIMiddleware, receiver: SegmentReceiver) -> None:
    status, headers, body = call(app, "/thing", REMOTE_USER="proxy-user", HTTP_USER_AGENT="ua")
    assert status == "201 Created" and b"".join(body) == b"made"
    body.close()  # type: ignore[attr-defined]
    (cookie,) = [v for k, v in headers if k == "Set-Cookie"]
    assert cookie.startswith("ajs_anonymous_id=%22")
    status, headers, body = call(app, "/health")
    assert not [v for k, v in headers if k == "Set-Cookie"]
    body.close()  # type: ignore[attr-defined]
    messages = flushed(app, receiver)
    (page,) = [m for m in messages if m["type"] == "page"]
    assert page["userId"] == "proxy-user" and page["properties"]["status"] == 201 and page["name"] == "/thing"
    assert [m["properties"]["path"] for m in messages if m["type"] == "track"] == ["/thing"]


def test_streamed_body_is_not_buffered_and_closed(
    app: SegmentWSGIMiddleware, receiver: SegmentReceiver
) -> None:
    produced.clear()
    closed.clear()
    _, _, body = call(app, "/stream")
    chunks = iter(body)
    assert next(chunks) == b"chunk 0\n" and produced == [0]
    assert list(chunks) == [b"chunk 1\n", b"chunk 2\n"]
    body.close()  # type: ignore[attr-defined]
    assert closed == [True], "the app's close() is reached through the middleware"
    (page,) = [m for m in flushed(app, receiver) if m["type"] == "page"]
    assert page["properties"]["status"] == 200


def test_app_error_propagates_with_500_page(app: SegmentWSGIMiddleware, receiver: SegmentReceiver) -> None:
    with pytest.raises(ZeroDivisionError, match="from the app"):
        call(app, "/boom")
    status, _, body = call(app, "/late-error")
    assert status.startswith("503")
    body.close()  # type: ignore[attr-defined]
    statuses = sorted(m["properties"]["status"] for m in flushed(app, receiver) if m["type"] == "page")
    assert statuses == [500, 503]


def test_user_id_callable_that_raises_never_breaks_the_request(
    receiver: SegmentReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(environ: dict[str, Any]) -> str:
        raise KeyError("secret-token-123")

    app = SegmentWSGIMiddleware(
        inner,
        user_id=broken,
        write_key=WRITE_KEY,
        host=receiver.url,
        flush_interval=60,
        local_store=str(tmp_path / "s.sqlite3"),
    )
    try:
        status, _, body = call(app, "/x")
        assert status == "201 Created"
        body.close()  # type: ignore[attr-defined]
        (page,) = [m for m in flushed(app, receiver) if m["type"] == "page"]
        assert "userId" not in page
        assert "USER_ID raised KeyError" in caplog.text and "secret-token-123" not in caplog.text
    finally:
        app.runtime.delivery.shutdown(2)
