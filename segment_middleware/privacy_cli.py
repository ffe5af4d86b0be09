"""``segment-middleware delete-user`` and ``regulations``: the privacy commands' arguments,
output and exit codes (the work is :mod:`segment_middleware.privacy`'s).

The CLI (``cli.py``) adds these to its parser and hands them validated settings. Exit
codes as the CLI's: 0 done, 1 Segment refused or was not reached, 2 bad input (raised as
:class:`~segment_middleware.privacy.PrivacyError`, which the CLI reports in one line). The
Public API token is taken from the settings only (no flag, which would put it in the
shell's history and in ``ps``), and never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .isotime import parse_iso
from .privacy import PublicAPIError, delete_users, purge, regulation, regulations
from .settings import Settings

__all__ = ["add_privacy_commands", "delete_user_command", "regulations_command"]


def add_privacy_commands(sub: Any) -> None:
    p = sub.add_parser(
        "delete-user",
        help="delete users: purge their events here and file a SUPPRESS_WITH_DELETE regulation with "
        "Segment (PUBLIC_API_TOKEN)",
    )
    p.add_argument(
        "user_ids", metavar="USER_ID", nargs="+", help="the userIds to delete (5,000 per regulation)"
    )
    p.add_argument(
        "--local-only",
        action="store_true",
        help="only purge the local store and spool; file nothing with Segment",
    )
    p = sub.add_parser("regulations", help="list the workspace's regulations (deletions) and their status")
    p.add_argument(
        "regulation_ids",
        metavar="REGULATION_ID",
        nargs="*",
        help="only these regulations (default: the latest)",
    )
    p.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="how many of the latest (default 20)"
    )
    p.add_argument("--json", action="store_true", help="one JSON regulation per line, as Segment gives it")


def delete_user_command(args: argparse.Namespace, settings: Settings) -> int:
    ids = list(args.user_ids)
    if args.local_only:
        _messages, rows = purge(ids, settings=settings)
        print(f"delete-user: {rows} stored row(s) of {len(ids)} user(s) deleted from {settings.local_store}")
        return 0
    try:
        done = delete_users(ids, settings=settings)
    except PublicAPIError as exc:
        for regulate_id in exc.filed:
            print(f"delete-user: filed regulation {regulate_id}")
        print(f"delete-user: not filed: {exc}", file=sys.stderr)
        return 1
    print(f"delete-user: {done.rows} stored row(s) of {len(ids)} user(s) deleted from {settings.local_store}")
    if not done.regulation_ids:
        print("delete-user: no write key and no PUBLIC_API_TOKEN: nothing was sent to Segment, nothing filed")
    for regulate_id in done.regulation_ids:
        print(f"delete-user: filed regulation {regulate_id} (SUPPRESS_WITH_DELETE)")
    return 0


_HEADER = f"{'regulation':<30}  {'status':<16}  {'created':<20}  finished"


def regulations_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.regulation_ids:
            found = [regulation(regulate_id, settings=settings) for regulate_id in args.regulation_ids]
        else:
            found = regulations(limit=args.limit, settings=settings)
    except PublicAPIError as exc:
        print(f"regulations: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for item in found:
            print(json.dumps(item, sort_keys=True))
        return 0
    if not found:
        print("regulations: none in the last 90 days", file=sys.stderr)
        return 0
    print(_HEADER)
    for item in found:
        print(
            f"{item.get('id', '?')!s:<30}  {item.get('overallStatus', '?')!s:<16}  "
            f"{_when(item.get('createdAt')):<20}  {_when(item.get('finishedAt'))}"
        )
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 10000:
        raise argparse.ArgumentTypeError(f"must be 1 to 10000, got {value}")
    return value


def _when(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "-"
    try:
        return parse_iso(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value[:20]
