"""The documentation site (issue 28): it builds strictly, its references cover the public
names and every setting, and its runnable examples run.

- The site is built once per session with ``mkdocs build --strict`` into a temporary
  directory (a broken link or anchor, a missing page, an unknown generated part or any
  other warning fails it), offline.
- Every public name of the product contract (``../shared/SPEC.md``, beside the repository,
  else its copy in ``tests/contract/``, held equal to it when both are there) that the
  package defines has an entry in the Python API reference, and every setting one
  in the settings reference.
- Every code block marked runnable in ``docs/`` (``{.python .runnable title="..."
  data-sends="N"}``, see docs/writing-docs.md) runs as a script in its own process, with
  ``SEGMENT_WRITE_KEY`` and ``SEGMENT_HOST`` pointing at the local receiver: it must exit 0
  and the receiver must get exactly N messages from it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver

from segment_middleware.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SHARED_SPEC = Path(os.environ.get("SEGMENT_SPEC", ROOT.parent / "shared" / "SPEC.md"))
# The contract as of the last sync, so that a checkout without ../shared (CI) checks it too.
VENDORED_SPEC = ROOT / "tests" / "contract" / "SPEC.md"
SPEC = SHARED_SPEC if SHARED_SPEC.is_file() else VENDORED_SPEC

sys.path.insert(0, str(ROOT / "scripts"))
import docs_reference  # noqa: E402
import mkdocs_hooks  # noqa: E402

if os.environ.get("CI") == "true":
    import mkdocs  # noqa: F401  (CI installs the docs extra through ./dev: missing is a failure)
else:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (./dev installs it)")


# ------------------------------------------------------------------ the build
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def anchors(site: Path, *pages: str) -> set[str]:
    found: set[str] = set()
    for page in pages:
        found |= set(re.findall(r'\bid="([^"]+)"', (site / page / "index.html").read_text()))
    return found


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in ("index.html", "settings/index.html", "reference/api/index.html", "changelog/index.html"):
        assert (site / page).is_file(), page
    assert "[Unreleased]" in (site / "changelog" / "index.html").read_text()  # CHANGELOG.md included


def test_an_unknown_generated_part_stops_the_build() -> None:
    with pytest.raises(mkdocs_hooks.UnknownGenerator, match="setings"):
        mkdocs_hooks.expand("# x\n\n<!-- generated: setings -->\n")
    assert "WRITE_KEY" in mkdocs_hooks.expand("<!-- generated: settings -->")


def test_the_readme_links_to_every_guide() -> None:
    """The README is where a new user starts: each page of the site's "Getting started"
    and "Guides" sections is linked from it, and each docs/ link there exists."""
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\(docs/([^)#]+)", readme))
    assert [page for page in sorted(linked) if not (DOCS / page).is_file()] == []
    nav = (ROOT / "mkdocs.yml").read_text().split("\n  - Getting started:", 1)[1]
    guides = re.findall(r"^      - [^:]+: (\S+\.md)$", nav.split("\n  - Reference:", 1)[0], flags=re.M)
    assert len(guides) > 15
    assert [page for page in guides if page not in linked] == []


# ------------------------------------------------------------------ settings
def test_every_setting_has_its_docstring_and_its_entry(site: Path) -> None:
    """The settings reference is made from the table: a row without the docstring under it
    would be a setting nobody can look up."""
    docs = docs_reference.setting_docstrings()
    rows = [f.name for f in dataclasses.fields(Settings)]
    undocumented = [name.upper() for name in rows if not docs.get(name)]
    assert not undocumented, f"add a docstring under these rows of Settings (settings.py): {undocumented}"
    page = anchors(site, "settings")
    assert {name.upper() for name in rows} <= page
    html = (site / "settings" / "index.html").read_text()
    for field in dataclasses.fields(Settings):
        assert field.metadata["id"] in html


def test_every_check_id_is_in_the_reference(site: Path) -> None:
    html = (site / "reference" / "checks" / "index.html").read_text()
    ids = {f.metadata["id"] for f in dataclasses.fields(Settings)}
    ids |= set(
        re.findall(r'id="(segment\.[EW]\d+)"', (ROOT / "segment_middleware/django/checks.py").read_text())
    )
    ids.add("segment.E000")
    assert len(ids) > len(dataclasses.fields(Settings))
    assert [i for i in sorted(ids) if f"<code>{i}</code>" not in html] == []


def test_every_cli_command_is_in_the_reference(site: Path) -> None:
    from segment_middleware.cli import build_parser

    page = anchors(site, "reference/cli")
    commands = [name for name, _, _ in docs_reference._subcommands(build_parser())]
    assert len(commands) >= 9
    assert [c for c in commands if c not in page] == []


def test_every_spec_event_is_in_the_reference(site: Path) -> None:
    from segment_middleware.spec_events import B2B, ECOMMERCE

    html = (site / "reference" / "spec-events" / "index.html").read_text()
    for event in (*ECOMMERCE, *B2B):
        assert f"{event.method}(...)" in html
        for prop in event.properties:
            assert f"<code>{prop.name}</code>" in html


# ------------------------------------------------------------------ public names
# Names of SPEC.md that name no attribute the package defines: features not built yet. A
# name that is defined must be in the reference, listed here or not.
NOT_BUILT_YET: frozenset[str] = frozenset()  # names SPEC.md has ahead of the code

# Upper-case words of SPEC.md that are not settings.
NOT_SETTINGS = {"MIDDLEWARE", "SUPPRESS_WITH_DELETE", "UUID", "POST", "DNT", "SEGMENT_"}


def _resolve(dotted: str) -> Any:
    """The object a dotted name of the package names, or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _namespaces() -> dict[str, Any]:
    """Where a bare name of SPEC.md is looked up, as the reference spells its path."""
    from segment_middleware.spec_methods import B2B, Ecommerce
    from segment_middleware.testing import CapturedEvents

    spaces: dict[str, Any] = {}
    for module in docs_reference.api_modules():
        spaces[module] = importlib.import_module(module)
    spaces["segment_middleware.Tracker"] = importlib.import_module("segment_middleware").Tracker
    spaces["segment_middleware.spec_methods.Ecommerce"] = Ecommerce
    spaces["segment_middleware.spec_methods.B2B"] = B2B
    spaces["segment_middleware.testing.CapturedEvents"] = CapturedEvents
    if "segment_middleware.flask" in spaces:
        spaces["segment_middleware.flask.Segment"] = spaces["segment_middleware.flask"].Segment
    return spaces


def _public_names(obj: Any) -> set[str]:
    """A module's ``__all__``, else what it defines itself (not what it imports)."""
    exported = getattr(obj, "__all__", None)
    if exported is not None:
        return set(exported)
    return {
        name
        for name, value in vars(obj).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == obj.__name__
    }


def spec_names(text: str) -> tuple[dict[str, str], set[str], set[str]]:
    """(expected reference id -> the SPEC word it comes from, setting names, unresolved)."""
    words = set(re.findall(r"`([^`]+)`", text)) | set(re.findall(r"^    +(.+)$", text, flags=re.M))
    spaces = _namespaces()
    expected: dict[str, str] = {}
    settings: set[str] = set()
    unresolved: set[str] = set()
    rows = {f.name.upper() for f in dataclasses.fields(Settings)}
    for word in words:
        for dotted in re.findall(r"\bsegment_middleware(?:\.[A-Za-z_]\w*)+", word):
            if _resolve(dotted) is None:
                unresolved.add(dotted)
            else:
                expected[dotted] = word
        for bare in set(re.findall(r"[A-Za-z_]\w*", word)):
            for path, space in spaces.items():
                if bare in _public_names(space) or (isinstance(space, type) and bare in vars(space)):
                    expected[f"{path}.{bare}"] = word  # every namespace that has it
        for upper in re.findall(r"^([A-Z][A-Z0-9_]+)\b", word):
            if upper in rows:
                settings.add(upper)
            elif upper not in NOT_SETTINGS and not upper.startswith("SEGMENT_") and "_" in upper:
                unresolved.add(upper)
    return expected, settings, unresolved


@pytest.mark.skipif(not SHARED_SPEC.is_file(), reason=f"no product contract at {SHARED_SPEC} to compare")
def test_the_vendored_contract_is_the_shared_one() -> None:
    """tests/contract/SPEC.md is what CI checks the reference against: a copy of the shared
    contract, renewed when it changes (``cp ../shared/SPEC.md tests/contract/``)."""
    assert VENDORED_SPEC.read_text() == SHARED_SPEC.read_text(), "run: cp ../shared/SPEC.md tests/contract/"


def test_every_public_name_of_the_contract_is_in_the_reference(site: Path) -> None:
    expected, settings, unresolved = spec_names(SPEC.read_text())
    assert len(expected) > 40 and len(settings) > 25  # the extraction still finds the contract's names
    api = anchors(site, "reference/api")
    missing = sorted(f"{path} (SPEC: `{word}`)" for path, word in expected.items() if path not in api)
    assert not missing, "public names without an entry in docs/reference/api.md:\n" + "\n".join(missing)
    assert settings <= anchors(site, "settings")
    assert unresolved <= NOT_BUILT_YET, (
        f"SPEC.md names what the package does not define: {unresolved - NOT_BUILT_YET}"
    )


# ------------------------------------------------------------------ runnable examples
RUNNABLE = re.compile(r"^```\{\s*\.python\s+\.runnable\b([^}]*)\}\n(.*?)^```$", re.M | re.S)


@dataclasses.dataclass(frozen=True)
class Example:
    page: str
    title: str
    sends: int
    source: str

    def __str__(self) -> str:
        return f"{self.page}:{self.title}"


def runnable_examples() -> Iterator[Example]:
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()
        for match in RUNNABLE.finditer(text):
            attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
            assert "title" in attrs and "data-sends" in attrs, (
                f"{path}: a runnable block needs title= and data-sends="
            )
            yield Example(
                str(path.relative_to(DOCS)), attrs["title"], int(attrs["data-sends"]), match.group(2)
            )


EXAMPLES = list(runnable_examples())


def test_runnable_blocks_are_found_and_render_as_code(site: Path) -> None:
    """A fence the Markdown extensions do not understand renders as text, and its example
    would silently stop being one: every block found here is a highlighted block there."""
    assert len(EXAMPLES) >= 8
    by_page: dict[str, int] = {}
    for example in EXAMPLES:
        by_page[example.page] = by_page.get(example.page, 0) + 1
    for page, count in by_page.items():
        html = (site / page.removesuffix(".md").removesuffix("index") / "index.html").read_text()
        assert html.count('class="runnable highlight"') == count, page


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_runnable_example(example: Example, tmp_path: Path) -> None:
    script = tmp_path / Path(example.title).name
    script.write_text(example.source)
    with SegmentReceiver(WRITE_KEY) as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENT_", "DJANGO_"))}
        env |= {"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_HOST": receiver.url, "PYTHONPATH": str(tmp_path)}
        run = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, f"{example} failed:\n{run.stdout}\n{run.stderr}"
        # The script has exited, so its exit flush is done: what arrived is all it sent.
        got = receiver.messages
        assert len(got) == example.sends, (
            example,
            [(m["type"], m.get("event") or m.get("name")) for m in got],
        )
    assert not (tmp_path / ".segment").exists(), "a runnable example wrote to the local store"
