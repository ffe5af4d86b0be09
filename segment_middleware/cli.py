"""``segment-middleware``: send calls, list the local store, replay the spool, check settings
and tracking plans.

Settings come from the environment (``SEGMENT_WRITE_KEY``, ``SEGMENT_HOST``,
``SEGMENT_LOCAL_STORE``) and the flags. Exit codes: 0 done, 1 not delivered, 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .replay import replay
from .settings import Settings, SettingsError
from .store import Store, StoredEvent

__all__ = ["main"]

PROG = "segment-middleware"


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


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    explicit: dict[str, Any] = {key: value for key, value in extra.items() if value is not None}
    if getattr(args, "store", None):
        explicit["local_store"] = args.store
    try:
        return Settings.from_sources(explicit, style="env")
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _parse_when(text: str) -> float:
    """``2026-11-01``, an ISO datetime, or a span back from now: ``30m``, ``2h``, ``7d``."""
    match = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return time.time() - seconds
    try:
        when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since: not a date, datetime or span like 2h: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


# ---------------------------------------------------------------------- sending
def _send(args: argparse.Namespace) -> int:
    from .core import Runtime
    from .tracker import _id

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
        _id(args.user_id, "user_id")
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
    if counts["delivered"]:
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
    flag = "" if row.replayed_at is None else " (replayed)"
    who = row.user_id or f"anon:{row.anonymous_id}" if (row.user_id or row.anonymous_id) else "-"
    return f"{row.id:>6}  {when}  {row.kind:<5}  {row.type:<8}  {row.event or '':<28}  {who}{flag}"


def _events(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = Store(settings.local_store)
    after = 0
    printed_header = False
    try:
        while True:
            rows = store.events(type=args.type, user=args.user, after_id=after, limit=args.limit)
            for row in rows:
                if args.json:
                    print(row.body)
                else:
                    if not printed_header:
                        print(
                            f"{'id':>6}  {'stored':<19}  {'kind':<5}  {'type':<8}  {'event / name':<28}  user"
                        )
                        printed_header = True
                    print(_format_row(row))
                after = row.id
            sys.stdout.flush()
            if not args.follow:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------- replay
def _replay(args: argparse.Namespace) -> int:
    from .delivery import Delivery
    from .sender import Sender

    settings = _settings(args, write_key=args.write_key, host=args.host)
    if settings.uses_store:
        raise UsageError("replay needs a write key: --write-key or SEGMENT_WRITE_KEY")
    since = _parse_when(args.since) if args.since else None
    store = Store(settings.local_store)
    sender = Sender(Delivery(settings.replace(max_retries=min(settings.max_retries, 3))), primary=True)
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
    settings = _settings(args)
    print("settings: ok")
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


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Segment calls, the local store and the spool.")
    parser.add_argument(
        "--store", help="local store path (default: SEGMENT_LOCAL_STORE or .segment/events.sqlite3)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("identify", help="send an identify call")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("traits", metavar="TRAITS_JSON", nargs="?")
    p = sub.add_parser("track", help="send a track call")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("properties", metavar="PROPERTIES_JSON", nargs="?")
    p = sub.add_parser("page", help="send a page call")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("properties", metavar="PROPERTIES_JSON", nargs="?")
    p = sub.add_parser("group", help="send a group call")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("group_id", metavar="GROUP_ID")
    p.add_argument("traits", metavar="TRAITS_JSON", nargs="?")
    p = sub.add_parser("alias", help="send an alias call")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("previous_id", metavar="PREVIOUS_ID")

    p = sub.add_parser("events", help="list what the local store holds")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--type", help="only this message type (track, page, identify, ...)")
    p.add_argument("--user", help="only this userId")
    p.add_argument("--json", action="store_true", help="one JSON message per line")
    p.add_argument("--limit", type=int, help="at most this many")

    p = sub.add_parser("replay", help="send stored and spooled events that were not sent yet")
    p.add_argument("--since", help="only events stored since: 2026-11-01, an ISO datetime, or 2h / 3d")
    p.add_argument("--write-key", help="default: SEGMENT_WRITE_KEY")
    p.add_argument("--host", help="default: SEGMENT_HOST or https://api.segment.io")

    sub.add_parser("check", help="are the settings valid and the host reachable?")

    p = sub.add_parser("plan", help="check a tracking plan (and events against it), or print the spec plan")
    p.add_argument(
        "action", choices=["check", "spec"], help="check PLAN [EVENTS]; spec: print the ready plan"
    )
    p.add_argument("plan", metavar="PLAN", nargs="?", help="a JSON or YAML plan file")
    p.add_argument(
        "events", metavar="EVENTS", nargs="?", help="a file of JSON messages, one per line (- stdin)"
    )
    p.add_argument("--stored", action="store_true", help="check the events in the local store")
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
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
