"""Types users meet in their IDE and in mypy: the typed sample project, run through mypy.

``tests/typed_sample/`` is a user's typed project in miniature (a Django views+urls pair,
a Flask app, a FastAPI app, a script), checked with ``--strict`` as django-stubs users
would (its ``mypy.ini``), and its Django files again as a project without django-stubs
sees them. ``mistakes.py`` holds deliberate errors, each line marked ``# error: [code]``:
mypy must report exactly those. The keyword TypedDicts are held to the settings table and
to the tracker's options, and every setting's default must be a valid keyword value.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mypy")
pytest.importorskip("mypy_django_plugin", reason="django-stubs (a dev dependency) is needed")
pytest.importorskip("fastapi")
flask = pytest.importorskip("flask")

from segment_middleware import Settings  # noqa: E402
from segment_middleware.keywords import CallOptions, SettingsKeywords  # noqa: E402
from segment_middleware.testing import capture  # noqa: E402
from segment_middleware.tracker import _OPTIONS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "typed_sample"
GOOD = ["django_views.py", "django_urls.py", "flask_app.py", "fastapi_app.py", "script.py"]
MYPY_TIMEOUT = 240  # a cold run takes ~10 s here; room for a loaded 2-core machine


# ---------------------------------------------------------------- the TypedDicts
def test_settings_keywords_are_the_settings_table() -> None:
    keys = set(SettingsKeywords.__optional_keys__)
    names = set(Settings.names())
    assert not SettingsKeywords.__required_keys__
    assert keys - names == set(), "SettingsKeywords has keys that are not settings"
    assert names - keys == set(), (
        "settings missing from SettingsKeywords (segment_middleware/keywords.py): add each "
        "with the types its check accepts"
    )


def test_call_options_are_the_trackers_options() -> None:
    assert set(CallOptions.__optional_keys__) == set(_OPTIONS)
    assert not CallOptions.__required_keys__


def _defaults_module(path: Path) -> Path:
    """A module giving every setting its default through SettingsKeywords: mypy must accept
    it, so no keyword's type is narrower than what the setting itself starts with."""
    lines = []
    for f in dataclasses.fields(Settings):
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        text = repr(value)
        try:
            literal = ast.literal_eval(text) == value
        except (ValueError, SyntaxError):
            literal = False
        if literal:  # a callable default could not be written as source; none is today
            lines.append(f"    {f.name!r}: {text},")
    assert len(lines) == len(dataclasses.fields(Settings))
    path.write_text(
        "from segment_middleware.keywords import SettingsKeywords\n\n"
        "defaults: SettingsKeywords = {\n" + "\n".join(lines) + "\n}\n"
    )
    return path


# ---------------------------------------------------------------- mypy on the sample
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def run_mypy(args: list[str], cache: Path) -> tuple[int, str]:
    """The venv's mypy in the sample's directory; the package found through MYPYPATH
    (its editable install is an import hook mypy cannot follow), its settings module
    (the django-stubs plugin sets Django up) through PYTHONPATH."""
    env = {
        **os.environ,
        "MYPYPATH": str(ROOT),
        "PYTHONPATH": str(SAMPLE),
        "MYPY_FORCE_COLOR": "0",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary", *args],
        cwd=SAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=MYPY_TIMEOUT,
    )
    return done.returncode, done.stdout + done.stderr


def test_typed_sample_passes_strict_mypy_with_django_stubs(cache_dir: Path, tmp_path: Path) -> None:
    defaults = _defaults_module(tmp_path / "settings_defaults.py")
    code, out = run_mypy(["--config-file", "mypy.ini", *GOOD, str(defaults)], cache_dir / "stubs")
    assert (code, out.strip()) == (0, "")


def test_django_views_typed_without_django_stubs(cache_dir: Path) -> None:
    # --no-site-packages hides django-stubs (and Django, untyped anyway): what a project
    # without the stubs sees. assert_type in the views fails if request.segment is Any.
    code, out = run_mypy(
        ["--config-file", "mypy-no-stubs.ini", "--no-site-packages", "django_views.py", "django_urls.py"],
        cache_dir / "no-stubs",
    )
    assert (code, out.strip()) == (0, "")


def _marked_errors(path: Path) -> set[tuple[int, str]]:
    marks = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = re.search(r"# error: \[([a-z-]+)\]", line)
        if found:
            marks.add((number, found.group(1)))
    return marks


def test_mistakes_are_reported(cache_dir: Path) -> None:
    expected = _marked_errors(SAMPLE / "mistakes.py")
    assert len(expected) >= 10
    code, out = run_mypy(["--config-file", "mypy.ini", "mistakes.py"], cache_dir / "stubs")
    reported = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"^mistakes\.py:(\d+): error: .*\[([a-z-]+)\]$", out, re.MULTILINE)
    }
    assert code == 1, out
    assert reported == expected, out


# ---------------------------------------------------------------- the typed accessors at run time
@pytest.fixture
def flask_app(tmp_path: Path) -> Iterator[flask.Flask]:
    from segment_middleware.flask import Segment

    app = flask.Flask(__name__)
    Segment(app, local_store=str(tmp_path / "store.sqlite3"), flush_interval=60)
    yield app
    app.extensions["segment"].runtime.delivery.shutdown(2)


def test_flask_tracker_is_the_requests_tracker(flask_app: flask.Flask) -> None:
    from segment_middleware.flask import tracker

    seen = []

    @flask_app.route("/p")
    def view() -> str:
        found = tracker()
        seen.append(found is flask.request.segment and found is flask.g.segment)  # type: ignore[attr-defined]
        found.track("Typed Accessor Used")
        return "ok"

    with capture() as events:
        assert flask_app.test_client().get("/p").status_code == 200
    assert seen == [True]
    assert len(events.tracks("Typed Accessor Used")) == 1


def test_flask_tracker_outside_a_request_or_without_the_extension() -> None:
    from segment_middleware.flask import tracker

    with pytest.raises(RuntimeError, match=r"needs a request.*segment_middleware\.tracker"):
        tracker()
    bare = flask.Flask(__name__)
    with bare.test_request_context("/"), pytest.raises(RuntimeError, match=r"Segment\(app\)"):
        tracker()
