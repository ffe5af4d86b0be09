"""MkDocs hooks (``hooks:`` in mkdocs.yml): fill the reference pages from the code.

A page asks for a generated part with a marker line of its own, ``<!-- generated: NAME -->``;
the hook replaces the line with :mod:`docs_reference`'s Markdown for NAME. An unknown NAME
stops the build, so a typo cannot leave a page silently empty.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docs_reference

GENERATORS = {
    "settings": docs_reference.settings_reference,
    "check-ids": docs_reference.check_ids_reference,
    "spec-events": docs_reference.spec_events_reference,
    "cli": docs_reference.cli_reference,
    "api": docs_reference.api_reference,
}

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


class UnknownGenerator(Exception):
    """A page names a generated part that does not exist."""


def nav_list(nav: list[Any], depth: int = 0) -> str:
    """The site's pages as a nested Markdown list, from mkdocs.yml's ``nav`` (links are
    relative to the docs root: only a page there may use it)."""
    lines: list[str] = []
    for item in nav:
        title, target = next(iter(item.items())) if isinstance(item, dict) else (None, item)
        indent = "    " * depth
        if isinstance(target, list):
            lines.append(f"{indent}- {title}")
            lines.append(nav_list(target, depth + 1))
        else:
            lines.append(f"{indent}- [{title or target}]({target}) (`{target}`)")
    return "\n".join(lines)


def expand(markdown: str, nav: list[Any] | None = None) -> str:
    """``markdown`` with each marker line replaced by its generated Markdown."""
    generators = {**GENERATORS, "pages": lambda: nav_list(nav or [])}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in generators:
            raise UnknownGenerator(f"unknown generated part {name!r} (known: {', '.join(generators)})")
        return generators[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, config: Any, **kwargs: Any) -> str:
    return expand(markdown, config["nav"])
