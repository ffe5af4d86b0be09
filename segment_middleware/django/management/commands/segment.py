"""``python manage.py segment check|events|replay|delete-user|regulations``: the
``segment-middleware`` command with this project's settings.

The arguments and the work are the CLI's own (``segment_middleware.cli``): this file only
hands Django's parser to it and says where the settings come from, so the two commands
cannot drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from segment_middleware import cli


class Command(BaseCommand):
    help = (
        "Segment: check the SEGMENT settings (and that the host takes the write key), list the "
        "local store, replay what was not sent, or delete users (and list those deletions). "
        "Same as the segment-middleware command."
    )
    # `segment check` reports bad settings itself, in one line; the system checks would
    # stop it (and events/replay) before it could.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_commands(parser, cli.PROJECT_COMMANDS)

    def handle(self, *args: Any, **options: Any) -> None:
        namespace = argparse.Namespace(
            **options, django_settings=settings.SETTINGS_MODULE or "(configured in code)"
        )

        def run() -> int:
            try:
                return cli.dispatch(namespace)
            except cli.UsageError as exc:
                raise CommandError(str(exc), returncode=2) from None

        # The CLI prints; sending that to this command's streams lets
        # ``call_command("segment", ..., stdout=buffer)`` capture it, as for any command.
        out = getattr(self.stdout, "_out", sys.stdout)
        err = getattr(self.stderr, "_out", sys.stderr)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.quiet_on_closed_pipe(run)
        if code == cli.CLOSED_PIPE_STATUS:  # nobody reads any more: leave without a word
            raise SystemExit(code)
        if code:  # the reason is printed already; this gives call_command() callers an error too
            raise CommandError(f"segment {namespace.command}: exit status {code}", returncode=code)
