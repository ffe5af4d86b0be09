"""Code outside a request uses the app's own settings; every process says where events go.

Each case runs as a user would run it: a fresh Django project's management command and
``manage.py shell -c``, a Flask script with an app context, a FastAPI app imported by a
script that never serves it. They send to the receiver on 127.0.0.1 with the settings the
web process would use (write key, host, tracking plan, BEFORE_SEND), never the
environment's or the local store.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver

import segment_middleware
from segment_middleware import ambient, core, logs
from segment_middleware.core import Runtime
from segment_middleware.logs import destination
from segment_middleware.settings import Settings

PLAN = {
    "allow_unplanned_events": True,
    "events": {"Order Completed": {"type": "object", "required": ["order_id"]}},
}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENT_", "DJANGO_"))}
    environ.update(env or {})
    environ["PYTHONPATH"] = str(cwd)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )


# ====================================================================== Django
def django_project(root: Path, receiver: SegmentReceiver, **segment: Any) -> Path:
    """A fresh project as ``startproject`` would leave it, plus our app and a command."""
    (root / "proj").mkdir()
    (root / "proj" / "__init__.py").write_text("")
    (root / "proj" / "hooks.py").write_text(
        "def mark(message):\n    message.setdefault('properties', {})['hooked'] = True\n    return message\n"
    )
    settings = {
        "WRITE_KEY": WRITE_KEY,
        "HOST": receiver.url,
        "TRACKING_PLAN": str(root / "plan.json"),
        "PLAN_VIOLATIONS": "drop",
        "BEFORE_SEND": ["proj.hooks.mark"],
        "LOCAL_STORE": str(root / "events.sqlite3"),
        **segment,
    }
    (root / "plan.json").write_text(json.dumps(PLAN))
    (root / "proj" / "settings.py").write_text(
        textwrap.dedent(
            f"""
            import os
            SECRET_KEY = "x" * 50
            DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
            ALLOWED_HOSTS = ["*"]
            INSTALLED_APPS = [
                "django.contrib.auth", "django.contrib.contenttypes", "segment_middleware.django", "proj",
            ]
            MIDDLEWARE = [
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "segment_middleware.django.SegmentMiddleware",
            ]
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}}
            SEGMENT = {settings!r}
            LOGGING = {{
                "version": 1,
                "handlers": {{"err": {{"class": "logging.StreamHandler"}}}},
                "loggers": {{"segment_middleware": {{"handlers": ["err"], "level": "INFO"}}}},
            }}
            """
        )
    )
    commands = root / "proj" / "management" / "commands"
    commands.mkdir(parents=True)
    (root / "proj" / "management" / "__init__.py").write_text("")
    (commands / "__init__.py").write_text("")
    (commands / "renewals.py").write_text(
        textwrap.dedent(
            """
            import segment_middleware
            from django.core.management.base import BaseCommand

            class Command(BaseCommand):
                def handle(self, *args, **options):
                    t = segment_middleware.tracker(user_id="10")
                    t.track("Subscription Renewed", {"plan": "pro"})
                    t.track("Order Completed", {"total": 5})  # breaks the plan: dropped
                    assert segment_middleware.flush(10)
                    self.stdout.write(repr(segment_middleware.stats()))
            """
        )
    )
    (root / "manage.py").write_text(
        "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n"
        "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n"
    )
    return root


def test_a_management_command_sends_with_the_projects_settings(
    receiver: SegmentReceiver, tmp_path: Path
) -> None:
    root = django_project(tmp_path, receiver)
    done = run(["manage.py", "renewals"], root)
    assert done.returncode == 0, done.stderr
    stats = eval(done.stdout.strip())  # the command printed stats()' dict
    assert stats["delivered"] == 1 and stats["blocked"] == 1 and stats["stored"] == 0, stats
    [message] = receiver.wait_for(1)
    assert message["event"] == "Subscription Renewed" and message["userId"] == "10"
    assert message["properties"] == {"plan": "pro", "hooked": True}  # BEFORE_SEND ran
    # the start-up line names the endpoint, and never the write key
    assert f"events go to {receiver.url}" in done.stderr and WRITE_KEY not in done.stderr


def test_manage_py_shell_sends_with_the_projects_settings(receiver: SegmentReceiver, tmp_path: Path) -> None:
    root = django_project(tmp_path, receiver)
    code = (
        "import segment_middleware as s; s.tracker(user_id=7).track('From Shell'); "
        "assert s.flush(10); print(s.stats()['delivered'])"
    )
    done = run(["manage.py", "shell", "-c", code], root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "1"  # Django 5.2's shell may first list its imports
    [message] = receiver.wait_for(1)
    assert message["event"] == "From Shell" and message["userId"] == "7"
    assert message["properties"] == {"hooked": True}


def test_configure_beside_django_settings_is_logged_as_ignored(
    receiver: SegmentReceiver, tmp_path: Path
) -> None:
    root = django_project(tmp_path, receiver)
    code = (
        "import logging, segment_middleware as s; "
        "s.configure(write_key='other-key-1234567890', host='http://127.0.0.1:9'); "
        "s.tracker(user_id=1).track('A'); s.tracker(user_id=1).track('B'); assert s.flush(10)"
    )
    done = run(["manage.py", "shell", "-c", code], root)
    assert done.returncode == 0, done.stderr
    assert [m["event"] for m in receiver.wait_for(2)] == ["A", "B"]
    assert done.stderr.count("configure() is ignored here") == 1, done.stderr
    assert "other-key-1234567890" not in done.stderr


def test_check_deploy_warns_without_a_write_key_when_debug_is_off(
    receiver: SegmentReceiver, tmp_path: Path
) -> None:
    root = django_project(tmp_path, receiver, WRITE_KEY=None)
    off = run(["manage.py", "check", "--deploy"], root, {"DJANGO_DEBUG": "0"})
    assert "segment.W101" in off.stdout + off.stderr
    debug = run(["manage.py", "check", "--deploy"], root, {"DJANGO_DEBUG": "1"})
    assert "segment.W101" not in debug.stdout + debug.stderr


def test_check_deploy_is_quiet_with_a_write_key(receiver: SegmentReceiver, tmp_path: Path) -> None:
    root = django_project(tmp_path, receiver)
    done = run(["manage.py", "check", "--deploy"], root, {"DJANGO_DEBUG": "0"})
    assert "segment.W101" not in done.stdout + done.stderr


# ====================================================================== Flask
FLASK_APP = """
import segment_middleware
from flask import Flask
from segment_middleware.flask import Segment

app = Flask("shop")
app.config["SEGMENT_WRITE_KEY"] = {key!r}
app.config["SEGMENT_HOST"] = {host!r}
app.config["SEGMENT_LOCAL_STORE"] = {store!r}
Segment(app)
"""


def test_a_flask_app_context_sends_with_the_apps_settings(receiver: SegmentReceiver, tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(
        FLASK_APP.format(key=WRITE_KEY, host=receiver.url, store=str(tmp_path / "e.sqlite3"))
    )
    script = (
        "import segment_middleware as s\nfrom shop import app\n"
        "with app.app_context():\n    s.tracker(user_id='u1').track('Nightly')\n"
        "s.tracker(user_id='u2').track('Outside The Context')  # the one app in the process\n"
        "assert s.flush(10)\nprint(s.stats()['delivered'], s.stats()['stored'])\n"
    )
    done = run(["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "0"]
    assert sorted(m["event"] for m in receiver.wait_for(2)) == ["Nightly", "Outside The Context"]


def test_two_flask_apps_use_the_current_contexts_app_and_say_so_outside(
    receiver: SegmentReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask import Flask

    from segment_middleware.flask import Segment

    # other test modules set Django up in this process; this one is about Flask alone
    monkeypatch.setattr(ambient, "_django", lambda: None)
    monkeypatch.setattr(core, "_served", [])
    monkeypatch.setattr(ambient, "_said", set())

    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=receiver.url)
        app.config["SEGMENT_LOCAL_STORE"] = str(tmp_path / f"{name}.sqlite3")
        Segment(app)
        apps.append(app)
    try:
        with apps[1].app_context():
            assert ambient.runtime() is apps[1].extensions["segment"].runtime
        with caplog.at_level(logging.WARNING, logger="segment_middleware"):
            assert ambient.runtime() is apps[0].extensions["segment"].runtime
            ambient.runtime()
        said = [r for r in caplog.records if "apps are configured in this process" in r.getMessage()]
        assert len(said) == 1  # said once, not at every call
    finally:
        for app in apps:
            app.extensions["segment"].runtime.delivery.shutdown(1)


# ====================================================================== FastAPI
FASTAPI_APP = """
from fastapi import FastAPI
from segment_middleware.asgi import SegmentMiddleware

app = FastAPI()
app.add_middleware(SegmentMiddleware, write_key={key!r}, host={host!r}, local_store={store!r})


@app.get("/")
def home():
    return {{"ok": True}}
"""


def test_a_script_importing_a_fastapi_app_sends_with_its_middlewares_settings(
    receiver: SegmentReceiver, tmp_path: Path
) -> None:
    (tmp_path / "api.py").write_text(
        FASTAPI_APP.format(key=WRITE_KEY, host=receiver.url, store=str(tmp_path / "e.sqlite3"))
    )
    script = (
        "import segment_middleware as s\nfrom segment_middleware.pipelines import all_deliveries\n"
        "from api import app\n"
        "s.tracker(user_id='u1').track('Imported Only')\n"
        "from fastapi.testclient import TestClient\n"
        "with TestClient(app) as client:\n    client.get('/')\n"
        "assert s.flush(10)\n"
        "print(len(all_deliveries()), s.stats()['delivered'])\n"
    )
    done = run(["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    # one pipeline: the middleware Starlette built later took the script's runtime
    assert done.stdout.split() == ["1", "2"]
    events = sorted((m["type"], m.get("event")) for m in receiver.wait_for(2))
    assert events == [("page", None), ("track", "Imported Only")]


# ====================================================================== in process
def test_configure_is_used_by_a_plain_script(receiver: SegmentReceiver, tmp_path: Path) -> None:
    script = (
        "import segment_middleware as s\n"
        f"s.configure(write_key={WRITE_KEY!r}, host={receiver.url!r}, local_store={str(tmp_path / 'e')!r})\n"
        "s.tracker(user_id=3).track('Scripted')\nassert s.flush(10)\nprint(s.stats()['delivered'])\n"
    )
    done = run(["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert [m["event"] for m in receiver.wait_for(1)] == ["Scripted"]


def test_without_a_write_key_writes_are_stored_not_delivered(tmp_path: Path) -> None:
    script = (
        "import segment_middleware as s\n"
        f"s.configure(local_store={str(tmp_path / 'e.sqlite3')!r})\n"
        "s.tracker(user_id=3).track('Kept')\nassert s.flush(10)\nprint(s.stats())\n"
    )
    done = run(["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    stats = eval(done.stdout.strip())
    assert stats["stored"] == 1 and stats["delivered"] == 0 and stats["queued"] == 1


def test_the_start_up_line_says_where_events_go(
    receiver: SegmentReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "_announced", set())  # an earlier receiver may have had this port
    store = tmp_path / "relative-looking.sqlite3"
    with caplog.at_level(logging.INFO, logger="segment_middleware"):
        kept = Runtime(Settings.from_sources({"local_store": str(store)}, style="kwarg", environ={}))
        # the same destination again in this process: no second line
        Runtime(Settings.from_sources({"local_store": str(store)}, style="kwarg", environ={}))
        sent = Runtime(
            Settings.from_sources({"write_key": WRITE_KEY, "host": receiver.url}, style="kwarg", environ={})
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "segment_middleware"]
    about_store = [line for line in lines if str(store.resolve()) in line]
    assert len(about_store) == 1 and "no write key" in about_store[0]
    assert "segment_middleware" in about_store[0]  # the line names the logger to configure
    assert sum(f"events go to {receiver.url}" in line for line in lines) == 1
    assert not any(WRITE_KEY in line for line in lines)
    for rt in (kept, sent):
        rt.delivery.shutdown(1)


def test_the_destination_never_shows_credentials_in_the_host() -> None:
    settings = Settings(write_key=WRITE_KEY, host="https://user:hunter2@proxy.example:8443/segment")
    assert destination(settings) == "events go to https://proxy.example:8443/segment"


def test_stats_has_every_documented_key() -> None:
    """The keys of ``stats()`` are the rows of the deployment guide's table, in its order."""
    table = (Path(__file__).parent.parent / "docs" / "deployment.md").read_text()
    rows = table.split("| key | counts |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", rows, re.M)
    assert list(segment_middleware.stats()) == documented


def test_a_forked_worker_says_where_its_events_go_with_its_own_pid(tmp_path: Path) -> None:
    """A preloading server builds the runtime in its master and forks the workers: each
    worker's renewed pipeline says the start-up line again, with its own pid."""
    script = (
        "import logging, os, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"
        "import segment_middleware as s\n"
        f"s.configure(local_store={str(tmp_path / 'e.sqlite3')!r})\n"
        "s.tracker(user_id=1).track('Master')\n"
        "assert s.flush(10)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    s.tracker(user_id=2).track('Worker')\n"
        "    code = 0 if s.flush(10) else 3\n"
        "    sys.stderr.flush()\n"
        "    os._exit(code)\n"
        "_, status = os.waitpid(child, 0)\n"
        "print(os.getpid(), child, os.waitstatus_to_exitcode(status))\n"
    )
    done = run(["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    master, worker, code = (int(x) for x in done.stdout.split())
    assert code == 0
    lines = [line for line in done.stderr.splitlines() if "events go to the local store" in line]
    assert len(lines) == 2, done.stderr
    assert f"(pid {master}," in lines[0] and f"(pid {worker}," in lines[1]
