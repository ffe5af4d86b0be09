"""EVENT_CATEGORIES and PAGE_CATEGORY compiled: the consent categories of a message, and
whether a request's consent answer lets it go (the rule is in ``consent``'s docstring).

A module of its own, importing nothing of the package: the settings build it
(``Settings.consent_categories``) and the sender asks it (``messages.finish``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

__all__ = ["PAGE_TYPES", "Categories"]

PAGE_TYPES = frozenset(("page", "screen"))  # the calls PAGE_CATEGORY applies to
_REMEMBERED = 1024  # event names whose categories are kept (cleared when full)
_REMEMBERED_TEXT = 256  # a longer event name is looked up every time


class Categories:
    """The categories of each message.

    Exact event names are one dict lookup; globs (``fnmatch``, case-sensitive as event
    names are) are tried in the order given, the first that matches wins. An event's
    answer is remembered, bounded: event names recur."""

    def __init__(self, events: Mapping[str, tuple[str, ...]], page: tuple[str, ...]) -> None:
        self.page = page
        self._exact = {name: cats for name, cats in events.items() if not _is_glob(name)}
        self._globs = [
            (re.compile(fnmatch.translate(name)), cats) for name, cats in events.items() if _is_glob(name)
        ]
        self._seen: dict[str, tuple[str, ...]] = {}

    def of_event(self, event: str) -> tuple[str, ...]:
        """A track call's categories; () when no entry names it."""
        found = self._seen.get(event)
        if found is not None:
            return found
        found = self._exact.get(event)
        if found is None:
            found = next((cats for pattern, cats in self._globs if pattern.match(event)), ())
        if len(event) <= _REMEMBERED_TEXT:
            if len(self._seen) >= _REMEMBERED:
                self._seen.clear()
            self._seen[event] = found
        return found

    def of(self, msg_type: object, event: object) -> tuple[str, ...]:
        """The categories a message of this type (and event, for a track) needs; () if none."""
        if msg_type == "track":
            return self.of_event(event) if isinstance(event, str) else ()
        if msg_type in PAGE_TYPES:
            return self.page
        return ()

    def refuses(self, msg_type: object, event: object, answer: Mapping[str, bool] | None) -> tuple[str, ...]:
        """The categories of this message that ``answer`` (a request's CONSENT answer, None:
        no answer) does not grant; () when the message may go. Only ``True`` grants."""
        needed = self.of(msg_type, event)
        if not needed:
            return ()
        if answer is None:
            return needed
        return tuple(c for c in needed if answer.get(c) is not True)


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")
