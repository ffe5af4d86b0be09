"""``segment-middleware``: send calls, list the local store, replay the spool, check settings
and tracking plans.

Settings come from the environment (``SEGMENT_WRITE_KEY``, ``SEGMENT_HOST``,
``SEGMENT_LOCAL_STORE``), or, when ``DJANGO_SETTINGS_MODULE`` is set, from that project's
``settings.SEGMENT`` over the environment; flags win over both. ``python manage.py segment``
(``segment_middleware/django/management/commands/segment.py``) runs ``check``, ``events``
and ``replay`` from here. Exit codes: 0 done, 1 not delivered, 2 bad input.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .isotime import parse_iso
from .privacy_cli import add_privacy_commands, delete_user_command, regulations_command
from .replay import replay
from .settings import Settings, SettingsError, problems
from .store import Store, StoredEvent
from .store_schema import CLAIMED, REJECTED, SENT
from .version import __version__

__all__ = ["PROJECT_COMMANDS", "UsageError", "add_commands", "build_parser", "dispatch", "main"]

PROG = "segment-middleware"

#: The commands ``python manage.py segment`` offers: the ones about a project's settings,
#: store and spool (sending single calls by hand stays with ``segment-middleware``).
PROJECT_COMMANDS = ("check", "events", "replay", "privacy")

#: The exit status of a command whose reader went away (``events | head -1``): what a shell
#: reports for a process ended by SIGPIPE, as ``cat`` or ``yes`` would be.
CLOSED_PIPE_STATUS = 141


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        _fail(message)


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- settings
class _Source:
    """Where the settings come from: a Django project's ``settings.SEGMENT`` (over the
    environment, as the middleware reads them) or the environment alone. The flags
    (``--store``, ``--write-key``, ``--host``) win over either."""

    def __init__(self, django_module: str | None) -> None:
        self.django_module = django_module

    def describe(self) -> str:
        return f"Django settings {self.django_module}" if self.django_module else "environment"

    def problems(self, explicit: Mapping[str, Any]) -> list[str]:
        """Every invalid setting, each message naming it as the user wrote it."""
        if not self.django_module:
            return [problem.message for problem in problems(explicit, None, style="env")]
        self._setup_django()
        from .django.conf import setting_problems

        return [problem.message for problem in [*setting_problems(), *_flag_problems(explicit)]]

    def settings(self, explicit: Mapping[str, Any]) -> Settings:
        """The validated settings; SettingsError names the first bad one."""
        if not self.django_module:
            return Settings.from_sources(explicit, style="env")
        self._setup_django()
        from .django.conf import load_settings

        settings = load_settings()
        flagged = _flag_problems(explicit)
        if flagged:
            raise SettingsError(flagged[0].message)
        return settings.replace(**explicit) if explicit else settings

    def _setup_django(self) -> None:
        """``django.setup()`` once (``manage.py`` has done it already). Whatever stops the
        project's settings from loading is bad input, reported in one line like a bad setting."""
        try:
            from django.apps import apps

            if apps.ready:
                return
            import django

            django.setup()
        except ImportError as exc:
            if exc.name in ("django", "django.apps"):
                raise UsageError(
                    f"DJANGO_SETTINGS_MODULE is {self.django_module}, but Django is not installed"
                ) from None
            raise UsageError(self._unloadable(exc)) from None
        except Exception as exc:  # the project's own settings code raised: its text, one line
            raise UsageError(self._unloadable(exc)) from None

    def _unloadable(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        key = os.environ.get("SEGMENT_WRITE_KEY") or ""
        if len(key) >= 4:  # never echo a key, even from the project's own exception text
            text = text.replace(key, "<the write key>")
        return f"DJANGO_SETTINGS_MODULE {self.django_module}: cannot be loaded: {type(exc).__name__}: {text}"


def _flag_problems(explicit: Mapping[str, Any]) -> list[Any]:
    """The flags' values checked alone, named like their environment variables."""
    return problems(explicit, None, style="env", environ={})


def _source(args: argparse.Namespace) -> _Source:
    return _Source(getattr(args, "django_settings", None))


def _explicit(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    explicit: dict[str, Any] = {key: value for key, value in extra.items() if value is not None}
    if getattr(args, "store", None):
        explicit["local_store"] = args.store
    return explicit


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    try:
        return _source(args).settings(_explicit(args, **extra))
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _parse_when(text: str) -> float:
    """``2026-11-01``, an ISO datetime, or a span back from now: ``30m``, ``2h``, ``7d``."""
    match = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return time.time() - seconds
    try:
        return parse_iso(text).timestamp()
    except ValueError:
        raise UsageError(f"--since: not a date, datetime or span like 2h: {text!r}") from None


# ---------------------------------------------------------------------- sending
def _send(args: argparse.Namespace) -> int:
    from .core import Runtime
    from .tracker import checked_id

    settings = _settings(args)
    kind = args.command
    # Validate every argument before anything is queued: nothing is half-sent.
    if kind == "identify":
        payload: Any = _json_object(args.traits, "TRAITS_JSON")
    elif kind == "track":
        payload = _json_object(args.properties, "PROPERTIES_JSON")
    elif kind == "page":
        name, props = args.name, args.properties
        if props is None and name is not None and name.lstrip().startswith("{"):
            name, props = None, name
        payload = (name, _json_object(props, "PROPERTIES_JSON"))
    elif kind == "group":
        payload = _json_object(args.traits, "TRAITS_JSON")
    else:
        payload = None
    try:
        checked_id(args.user_id, "user_id")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    runtime = Runtime(settings)
    tracker = runtime.tracker(user_id=args.user_id)
    try:
        if kind == "identify":
            tracker.identify(args.user_id, payload)
        elif kind == "track":
            tracker.track(args.event, payload)
        elif kind == "page":
            tracker.page(payload[0], payload[1])
        elif kind == "group":
            tracker.group(args.group_id, payload)
        else:
            tracker.alias(args.user_id, args.previous_id)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    runtime.delivery.flush(max(settings.shutdown_timeout, settings.timeout))
    runtime.delivery.shutdown(settings.shutdown_timeout)
    counts = runtime.delivery.stats()
    where = settings.local_store if settings.uses_store else settings.host
    # Written to the local store counts as done (``stored``; ``delivered`` before it had a count of its own).
    if counts["delivered"] or counts.get("stored"):
        verb = "stored in" if settings.uses_store else "delivered to"
        print(f"{kind}: {verb} {where}")
        return 0
    if counts["spooled"]:
        print(f"{kind}: not delivered to {where}; spooled in {settings.local_store}", file=sys.stderr)
    else:
        print(f"{kind}: not delivered to {where}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------- events
def _format_row(row: StoredEvent) -> str:
    when = _dt.datetime.fromtimestamp(row.stored_at).strftime("%Y-%m-%d %H:%M:%S")
    flag = _STATE_FLAGS.get(row.state, "")
    who = row.user_id or f"anon:{row.anonymous_id}" if (row.user_id or row.anonymous_id) else "-"
    return f"{row.id:>6}  {when}  {row.kind:<5}  {row.type:<8}  {row.event or '':<28}  {who}{flag}"


_STATE_FLAGS = {SENT: " (replayed)", REJECTED: " (rejected)", CLAIMED: " (claimed)"}
_HEADER = f"{'id':>6}  {'stored':<19}  {'kind':<5}  {'type':<8}  {'event / name':<28}  user"

#: Rows read from the store at a time: ``events`` walks a large store in pages, so memory
#: holds one page and the ``--limit`` newest, never the whole file.
_PAGE = 500


class _Query:
    """The rows ``events`` shows, read in id order, resumable: ``after`` is the last id read
    (shown or not), where ``--follow`` carries on."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.event is not None and args.type not in (None, "track"):
            raise UsageError(f"--event names track events; it cannot go with --type {args.type}")
        self.type = "track" if args.event is not None else args.type
        self.user: str | None = args.user
        self.event: str | None = args.event
        self.since = _parse_when(args.since) if args.since else None
        self.after = 0

    @property
    def filtered(self) -> bool:
        return any(value is not None for value in (self.type, self.user, self.since))

    def rows(self, store: Store) -> Iterator[StoredEvent]:
        """Every matching row after ``self.after``, oldest first."""
        while True:
            page = store.events(
                type=self.type, user=self.user, since=self.since, after_id=self.after, limit=_PAGE
            )
            for row in page:
                self.after = row.id
                if self.event is None or row.event == self.event:
                    yield row
            if len(page) < _PAGE:
                return


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _events(args: argparse.Namespace) -> int:
    settings = _settings(args)
    query = _Query(args)
    store = Store(settings.local_store)
    try:
        rows: Iterator[StoredEvent] = query.rows(store)
        if args.limit is not None:  # the newest N, still printed oldest first
            rows = iter(collections.deque(rows, maxlen=args.limit))
        shown = _print_rows(rows, args, header=True)
        if not shown and not args.json:
            matching = " match" if query.filtered else ""
            waiting = "; waiting for new ones (Ctrl-C stops)" if args.follow else ""
            print(f"events: none{matching} in {settings.local_store}{waiting}", file=sys.stderr)
        sys.stdout.flush()
        while args.follow:
            time.sleep(0.5)  # polling the store file: another process writes it
            shown += _print_rows(query.rows(store), args, header=not shown)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


def _print_rows(rows: Iterator[StoredEvent], args: argparse.Namespace, *, header: bool) -> int:
    """Print rows as the table (with its header before the first) or as JSON lines."""
    count = 0
    for row in rows:
        if args.json:
            print(row.body)
        else:
            if header and not count:
                print(_HEADER)
            print(_format_row(row))
        count += 1
    return count


# ---------------------------------------------------------------------- replay
def _replay(args: argparse.Namespace) -> int:
    from .delivery import Delivery

    settings = _settings(args, write_key=args.write_key, host=args.host)
    if settings.uses_store:
        where = "SEGMENT['WRITE_KEY'] or " if _source(args).django_module else ""
        raise UsageError(f"replay needs a write key: --write-key, {where}SEGMENT_WRITE_KEY")
    since = _parse_when(args.since) if args.since else None
    store = Store(settings.local_store)
    sender = Delivery(settings.replace(max_retries=min(settings.max_retries, 3))).new_sender(primary=True)
    store.release_stale_claims()
    result = replay(store, sender.post, since=since)
    rejected = f"; {result.rejected} rejected by the endpoint (kept in the store)" if result.rejected else ""
    if result.error is not None:
        left = len(store.events(since=since, pending_only=True))
        why, sent = type(result.error).__name__, result.sent
        print(f"replay: stopped after {sent} message(s): {why}; {left} left{rejected}", file=sys.stderr)
        return 1
    print(f"replay: sent {result.sent} message(s) to {settings.host}{rejected}")
    return 1 if result.rejected else 0


# ---------------------------------------------------------------------- check
def _check(args: argparse.Namespace) -> int:
    source, explicit = _source(args), _explicit(args)
    found = source.problems(explicit)
    if found:  # every bad setting, still on one line
        raise UsageError("; ".join(found))
    try:
        settings = source.settings(explicit)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    print(f"settings: ok (from {source.describe()})")
    try:
        count = Store(settings.local_store).count()
        print(f"local store: {settings.local_store} ({count} events)")
    except Exception as exc:
        print(f"local store: {settings.local_store} is not usable: {exc}", file=sys.stderr)
        return 1
    if settings.uses_store:
        print("write key: not set; events go to the local store")
        return 0
    print("write key: set")
    from segment.analytics.request import APIError, post

    try:
        post(settings.write_key, settings.host, timeout=min(settings.timeout, 10), batch=[])
        print(f"host: {settings.host} reachable, write key accepted")
    except APIError as exc:
        print(f"host: {settings.host} reachable, but it answered {exc.status}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"host: {settings.host} not reachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------- plan
def _plan(args: argparse.Namespace) -> int:
    from .plan import PlanError, load_plan, spec_plan

    if args.action == "spec":
        print(json.dumps(spec_plan(), indent=2))
        return 0
    if not args.plan:
        raise UsageError(
            "plan check needs the plan file: segment-middleware plan check PLAN.json [EVENTS.jsonl]"
        )
    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    print(f"plan: {args.plan} ok ({len(plan.events)} planned events)")
    if args.events is None and not args.stored:
        return 0
    messages = _stored_messages(args) if args.stored else _jsonl(args.events)
    broken = 0
    for number, message in enumerate(messages, 1):
        rules = plan.violations(message)
        if rules:
            broken += 1
            name = message.get("event") or message.get("type")
            print(f"{number}: {name!r} breaks the plan: {'; '.join(rules)}")
    print(f"checked {number if messages else 0} message(s): {broken} break the plan")
    return 1 if broken else 0


def _jsonl(path: str) -> list[dict[str, Any]]:
    """One JSON message per line (what ``events --json`` prints); ``-`` is standard input."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    lines = text.splitlines()
    messages = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(message, dict):
            raise UsageError(f"{path}:{number}: not a message object")
        messages.append(message)
    return messages


def _stored_messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [row.message for row in Store(_settings(args).local_store).events()]


# ---------------------------------------------------------------------- privacy
def _privacy(args: argparse.Namespace, command: Callable[[argparse.Namespace, Settings], int]) -> int:
    """``delete-user`` and ``regulations`` (privacy_cli.py), with the settings as every
    command reads them; a deletion that cannot be filed as configured is bad input."""
    from .privacy import PrivacyError

    try:
        return command(args, _settings(args))
    except PrivacyError as exc:
        raise UsageError(str(exc)) from None


# ---------------------------------------------------------------------- parser
def _add_send_commands(sub: Any) -> None:
    p = sub.add_parser("identify", help="send an identify call")
    p.add_argument("user_id", metavar="USER_ID", help="the user's id")
    p.add_argument(
        "traits", metavar="TRAITS_JSON", nargs="?", help='traits, a JSON object: \'{"plan": "pro"}\''
    )
    p = sub.add_parser("track", help="send a track call")
    p.add_argument("user_id", metavar="USER_ID", help="the user's id")
    p.add_argument("event", metavar="EVENT", help='the event\'s name: "Order Completed"')
    p.add_argument("properties", metavar="PROPERTIES_JSON", nargs="?", help="properties, a JSON object")
    p = sub.add_parser("page", help="send a page call")
    p.add_argument("user_id", metavar="USER_ID", help="the user's id")
    p.add_argument(
        "name", metavar="NAME", nargs="?", help="the page's name (a JSON object here is PROPERTIES_JSON)"
    )
    p.add_argument("properties", metavar="PROPERTIES_JSON", nargs="?", help="properties, a JSON object")
    p = sub.add_parser("group", help="send a group call")
    p.add_argument("user_id", metavar="USER_ID", help="the user's id")
    p.add_argument("group_id", metavar="GROUP_ID", help="the group's (account's) id")
    p.add_argument("traits", metavar="TRAITS_JSON", nargs="?", help="the group's traits, a JSON object")
    p = sub.add_parser("alias", help="send an alias call")
    p.add_argument("user_id", metavar="USER_ID", help="the user's new id")
    p.add_argument(
        "previous_id", metavar="PREVIOUS_ID", help="the id it replaces (an anonymousId or old userId)"
    )


_SINCE_HELP = "only events stored since: 2026-11-01, an ISO datetime, or a span back from now: 30m, 2h, 7d"


def _add_events(sub: Any) -> None:
    p = sub.add_parser("events", help="list what the local store holds, oldest first")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events (Ctrl-C stops)")
    p.add_argument("--type", help="only this message type (track, page, identify, ...)")
    p.add_argument("--user", help="only this userId")
    p.add_argument("--event", help="only track events of this name")
    p.add_argument("--since", help=_SINCE_HELP)
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the latest N (still oldest first)")
    p.add_argument("--json", action="store_true", help="one JSON message per line, as sent")


def _add_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="send stored and spooled events that were not sent yet")
    p.add_argument("--since", help=_SINCE_HELP)
    p.add_argument("--write-key", help="default: the settings' write key (SEGMENT_WRITE_KEY)")
    p.add_argument("--host", help="default: the settings' host (SEGMENT_HOST, else https://api.segment.io)")


def _add_check(sub: Any) -> None:
    sub.add_parser(
        "check",
        help="are the settings valid (a Django project's when DJANGO_SETTINGS_MODULE is set), "
        "the store usable and the host reachable?",
    )


def _add_plan(sub: Any) -> None:
    p = sub.add_parser("plan", help="check a tracking plan (and events against it), or print the spec plan")
    p.add_argument(
        "action", choices=["check", "spec"], help="check PLAN [EVENTS]; spec: print the ready plan"
    )
    p.add_argument("plan", metavar="PLAN", nargs="?", help="a JSON or YAML plan file")
    p.add_argument(
        "events", metavar="EVENTS", nargs="?", help="a file of JSON messages, one per line (- stdin)"
    )
    p.add_argument("--stored", action="store_true", help="check the events in the local store")


#: Each adds its sub-command(s) to a subparsers action ("send": identify, track, page, group, alias).
_ADDERS: dict[str, Callable[[Any], None]] = {
    "send": _add_send_commands,
    "events": _add_events,
    "replay": _add_replay,
    "check": _add_check,
    "plan": _add_plan,
    "privacy": add_privacy_commands,  # delete-user, regulations
}


def add_commands(parser: argparse.ArgumentParser, names: Sequence[str], **subparsers: Any) -> None:
    """Add ``--store`` and the named sub-commands to ``parser``: the CLI's parser has them
    all; ``manage.py segment`` adds :data:`PROJECT_COMMANDS` to Django's own parser."""
    parser.add_argument(
        "--store",
        help="local store path (default: the settings' LOCAL_STORE, SEGMENT_LOCAL_STORE, "
        "or .segment/events.sqlite3)",
    )
    sub = parser.add_subparsers(dest="command", required=True, help="what to do", **subparsers)
    for name in names:
        _ADDERS[name](sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Segment calls, the local store and the spool.")
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version and exit"
    )
    add_commands(parser, list(_ADDERS), parser_class=_Parser)
    return parser


_COMMANDS = {
    "identify": _send,
    "track": _send,
    "page": _send,
    "group": _send,
    "alias": _send,
    "events": _events,
    "replay": _replay,
    "check": _check,
    "plan": _plan,
    "delete-user": lambda args: _privacy(args, delete_user_command),
    "regulations": lambda args: _privacy(args, regulations_command),
}


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; UsageError for bad input. ``args.django_settings`` (a settings
    module, or None for the environment) says where the settings come from."""
    return _COMMANDS[args.command](args)


def quiet_on_closed_pipe(command: Callable[[], int]) -> int:
    """Run ``command``; if the reader of stdout goes away (``events | head -1``), end quietly
    with :data:`CLOSED_PIPE_STATUS`, as a command killed by SIGPIPE would: no traceback,
    and stdout pointed at devnull so the interpreter's last flush cannot complain either."""
    try:
        code = command()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # stdout is not a file descriptor (replaced in-process)
            pass
        return CLOSED_PIPE_STATUS


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.django_settings = os.environ.get("DJANGO_SETTINGS_MODULE") or None

    def run() -> int:
        try:
            return dispatch(args)
        except UsageError as exc:
            _fail(str(exc))

    return quiet_on_closed_pipe(run)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
