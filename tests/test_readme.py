"""The README's quick starts are complete programs: copied as they are, they run and send.

Each framework's block is taken from README.md itself (so an edit that breaks it fails
here), run in a namespace of its own, and driven with the framework's test client inside
``capture()``: the view's call and the request's page call must both be sent. Every
block, the Django settings and view too, has no undefined name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from segment_middleware.testing import capture

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"one README python block with {marker!r}, found {len(found)}"
    return found[0]


def run(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, "README.md", "exec"), namespace)
    return namespace


def sent(events: Any) -> list[tuple[str, str | None]]:
    return sorted((m["type"], m.get("event") or m.get("name")) for m in events)


def test_the_flask_quick_start_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGMENT_LOCAL_STORE", str(tmp_path / "e.sqlite3"))
    app = run(block("Segment(app)"))["app"]
    with capture() as events:
        assert app.test_client().get("/products/red-shoes").status_code == 200
    assert sent(events) == [("page", "product"), ("track", "Product Viewed")]


def test_the_fastapi_quick_start_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SEGMENT_LOCAL_STORE", str(tmp_path / "e.sqlite3"))
    app = run(block("app.add_middleware(SegmentMiddleware"))["app"]
    with capture() as events, TestClient(app) as client:
        assert client.get("/items/42").json() == {"item_id": "42"}
    assert sent(events) == [("page", "item"), ("track", "Item Viewed")]


def test_the_wsgi_quick_start_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from werkzeug.test import Client

    monkeypatch.setenv("SEGMENT_LOCAL_STORE", str(tmp_path / "e.sqlite3"))
    app = run(block("SegmentWSGIMiddleware(hello"))["app"]
    with capture() as events:
        assert Client(app).get("/hi", environ_base={"REMOTE_USER": "u7"}).get_data() == b"Hello"
    assert [(m["type"], m["name"], m["userId"]) for m in events] == [("page", "/hi", "u7")]


@pytest.mark.parametrize(
    "marker",
    [
        'SEGMENT = {"WRITE_KEY"',
        "def checkout(request: TrackedHttpRequest)",
        "Segment(app)",
        "app.add_middleware(SegmentMiddleware",
        "SegmentWSGIMiddleware(hello",
    ],
)
def test_each_quick_start_has_no_undefined_name(marker: str) -> None:
    """Copy-pasteable means nothing to fill in: ruff's undefined-name check (F821) passes
    on each block alone (the Django ones are settings and a view: they are not run here)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "check", "--no-cache", "--isolated", "--select", "F821",
         "--stdin-filename", "readme_block.py", "-"],
        input=block(marker),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
