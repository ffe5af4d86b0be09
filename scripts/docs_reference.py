"""The reference pages' Markdown, made from the code's own tables (never written twice).

Each function returns the Markdown of one generated part of the site:

- :func:`settings_reference`: every row of ``segment_middleware.settings.Settings`` (its
  name in each framework's style, type, default, check id) with the row's own docstring,
  the string literal right under it in ``settings.py``;
- :func:`check_ids_reference`: ``segment.E000``, every row's id, and the ids the Django
  system checks in ``segment_middleware/django/checks.py`` report;
- :func:`spec_events_reference`: ``segment_middleware.spec_events`` (events, properties);
- :func:`cli_reference`: the ``argparse`` parser of ``segment_middleware.cli``.

``scripts/mkdocs_hooks.py`` puts them into the pages at build time, and
``tests/test_docs.py`` uses :func:`setting_docstrings` to hold every row to a docstring.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "segment_middleware"


# ------------------------------------------------------------------------ settings
def setting_docstrings() -> dict[str, str]:
    """Each row of ``Settings`` -> the docstring written under it (``""`` when it has none).

    Read with ``ast`` from the source, as Sphinx and griffe read attribute docstrings: at
    run time the string literal is thrown away."""
    tree = ast.parse((PACKAGE / "settings.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs: dict[str, str] = {}
    body = cls.body
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = ""
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                text = inspect.cleandoc(after.value.value)
            docs[node.target.id] = text
    return docs


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _show(value: Any) -> str:
    """A default as a user writes it in a settings file."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        value = dict(value)
    return repr(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_sentence(text: str) -> str:
    """The docstring's first sentence, shortened at a word to fit the overview table (the
    setting's section has all of it), never cut inside a code span or parentheses."""
    first = re.split(r"\.(?:\s|$)", _one_line(text), maxsplit=1)[0]
    if len(first) <= 100:
        return first
    short = first[:100].rsplit(" ", 1)[0]
    while short.count("``") % 2 or short.count("(") > short.count(")"):
        short = short[: max(short.rfind("``"), short.rfind("("))].rstrip()
    return short.rstrip(",;:") + " ..."


def settings_reference() -> str:
    """An overview table, then one section per setting, in the order of ``Settings``."""
    from segment_middleware.settings import ENV_VARS, Settings

    docs = setting_docstrings()
    fields = dataclasses.fields(Settings)
    out = ["| setting | default | what | check id |", "|---|---|---|---|"]
    for f in fields:
        name = f.name.upper()
        default = _show(_default(f))
        if len(default) > 40:
            default = default[:37] + "..."
        what = _first_sentence(docs.get(f.name) or "").replace("|", "\\|")
        out.append(f"| [`{name}`](#{name}) | `{default}` | {what} | `{f.metadata['id']}` |")
    out.append("")
    for f in fields:
        name = f.name.upper()
        doc = docs.get(f.name) or ""
        names = [
            f'Django `SEGMENT["{name}"]`',
            f'Flask `app.config["SEGMENT_{name}"]`',
            f"keyword `{f.name}=`",
        ]
        if f.name in ENV_VARS:
            names.append(f"environment `{ENV_VARS[f.name]}`")
        facts = [f"type `{f.type}`", f"default `{_show(_default(f))}`", f"check id `{f.metadata['id']}`"]
        if not f.repr:
            facts.append("secret: never printed")
        out += [
            f"### `{name}` {{#{name}}}",
            "",
            doc,
            "",
            "- " + " · ".join(names),
            "- " + " · ".join(facts),
            "",
        ]
    return "\n".join(out)


# ------------------------------------------------------------------------ check ids
def _django_checks() -> Iterator[tuple[str, str, str, bool]]:
    """(id, message, hint, deploy-only) of each ``Error``/``Warning`` in django/checks.py.

    Messages are f-strings over the module's constants; they are evaluated in the
    module's namespace, so the page says exactly what ``manage.py check`` prints."""
    path = PACKAGE / "django" / "checks.py"
    tree = ast.parse(path.read_text())
    namespace = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        deploy = any(
            isinstance(d, ast.Call) and any(k.arg == "deploy" for k in d.keywords)
            for d in func.decorator_list
        )
        for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
            keywords = {k.arg: k.value for k in call.keywords}
            ident = keywords.get("id")
            if not (isinstance(ident, ast.Constant) and str(ident.value).startswith("segment.")):
                continue
            message = _evaluate(call.args[0], namespace) if call.args else ""
            hint = _evaluate(keywords["hint"], namespace) if "hint" in keywords else ""
            yield str(ident.value), message, hint, deploy


def _evaluate(node: ast.expr, namespace: dict[str, Any]) -> str:
    code = compile(ast.Expression(node), "<checks>", "eval")
    return str(eval(code, {}, dict(namespace)))


def check_ids_reference() -> str:
    from segment_middleware.settings import ADVICE, UNKNOWN_ID, Settings

    out = ["| id | when | what to do |", "|---|---|---|"]
    out.append(
        f"| `{UNKNOWN_ID}` | a key no setting has, named with the nearest setting when one is "
        "close (`SEGMENT['EXCLUDE_PATH']: unknown setting (did you mean EXCLUDE_PATHS?)`) "
        "| fix the key's spelling |"
    )
    for f in dataclasses.fields(Settings):
        name = f.name.upper()
        out.append(
            f"| `{f.metadata['id']}` | [`{name}`](../settings.md#{name}) has an invalid value; the "
            f"message names the setting as you wrote it | see [`{name}`](../settings.md#{name}) |"
        )
    for ident, message, hint, deploy in sorted(_django_checks()):
        when = ("(`check --deploy` only) " if deploy else "") + message.replace("|", "\\|")
        out.append(f"| `{ident}` | {when} | {hint.replace('|', chr(92) + '|')} |")
    for ident, message in sorted(ADVICE.items()):
        out.append(f"| `{ident}` | {message} (also logged once at start-up) | set both, or neither |")
    return "\n".join(out)


# ------------------------------------------------------------------------ spec events
def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def spec_events_reference() -> str:
    from segment_middleware.spec_events import B2B, ECOMMERCE, PRODUCT

    out: list[str] = []
    for title, attr, events in (
        ("E-commerce Spec v2", "ecommerce", ECOMMERCE),
        ("B2B SaaS Spec", "b2b", B2B),
    ):
        out += [f"## {title}", ""]
        for event in events:
            out += [
                f"### {event.event} {{#{_anchor(event.event)}}}",
                "",
                f"`tracker.{attr}.{event.method}(...)` · section: {event.group}"
                + (" · sends `context.groupId` (keyword `group_id`)" if event.group_id_in_context else ""),
                "",
            ]
            if event.properties:
                out += ["| property | type | required | description |", "|---|---|---|---|"]
                for prop in event.properties:
                    required = "yes" if prop.name in event.identifying else ""
                    out.append(
                        f"| `{prop.name}` | {prop.type} | {required} | {_one_line(prop.description)} |"
                    )
            else:
                out.append("No properties of its own.")
            out.append("")
    out += [
        "## Product fields {#product-fields}",
        "",
        "The fields of each dict in a `products` property, and of the single-product events.",
        "",
        "| field | type | description |",
        "|---|---|---|",
    ]
    out += [f"| `{p.name}` | {p.type} | {_one_line(p.description)} |" for p in PRODUCT]
    return "\n".join(out)


# ------------------------------------------------------------------------ CLI
def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return []


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0:
                name += f" `{action.metavar or action.dest.upper()}`"
        else:
            name = f"`{action.metavar or action.dest}`"
            if action.nargs == "?":
                name += " (optional)"
        text = action.help or ""
        if action.choices:
            text += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append(f"| {name} | {text.replace('|', chr(92) + '|')} |")
    return ["| argument | meaning |", "|---|---|", *rows] if rows else []


def cli_reference() -> str:
    from segment_middleware.cli import build_parser

    parser = build_parser()
    out = [
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        parser.description or "",
        "",
        *_arguments(parser),
        "",
    ]
    for name, sub, help_text in _subcommands(parser):
        usage = sub.format_usage().strip().replace("usage: ", "", 1)
        out += [
            f"## `{name}`",
            "",
            help_text[:1].upper() + help_text[1:] + ".",
            "",
            "```text",
            usage,
            "```",
            "",
        ]
        out += [*_arguments(sub), ""]
    return "\n".join(out)


# ------------------------------------------------------------------------ Python API
#: The modules whose ``__all__`` is public API, in the reference's order. One that does not
#: exist (yet) is left out; tests/test_docs.py checks the contract's names are all covered.
API_MODULES = (
    "segment_middleware",
    "segment_middleware.django",
    "segment_middleware.django.tasks",
    "segment_middleware.django.urls",
    "segment_middleware.flask",
    "segment_middleware.asgi",
    "segment_middleware.wsgi",
    "segment_middleware.testing",
    "segment_middleware.pytest_plugin",
    "segment_middleware.celery",
    "segment_middleware.rq",
    "segment_middleware.snippet",
    "segment_middleware.keywords",
    "segment_middleware.spec_methods",
    "segment_middleware.consent",
    "segment_middleware.privacy",
    "segment_middleware.sources",
    "segment_middleware.profiles",
)


def _module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def api_modules() -> list[str]:
    return [module for module in API_MODULES if _module_file(module).is_file()]


def _shadowed_functions(module: str) -> Iterator[str]:
    """Sections for the functions of ``module.__all__`` that share their name with a
    submodule (``segment_middleware.tracker``): griffe, and so mkdocstrings, sees only the
    submodule there (griffe issue 124), so these are made from the live function."""
    import importlib

    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", ()):
        obj = getattr(mod, name)
        if inspect.isfunction(obj) and (_module_file(f"{module}.{name}")).is_file():
            signature = str(inspect.signature(obj)).replace("'", "")
            yield "\n".join(
                [
                    f"## `{module}.{name}()` {{#{module}.{name}}}",
                    "",
                    "```python",
                    f"def {name}{signature}",
                    "```",
                    "",
                    inspect.cleandoc(obj.__doc__ or ""),
                ]
            )


#: ``segment_middleware.Settings`` is shown without its dataclass signature and fields (the
#: rows' internals); its fields are the settings reference's entries.
_SETTINGS_BLOCK = """::: segment_middleware.Settings
    options:
      show_signature: false
      members: [from_sources, replace, names, uses_store]

Each setting is an attribute of the same name in lower case (``settings.flush_at``); they
are listed, with their types, defaults and check ids, in the [settings
reference](../settings.md)."""


def api_reference() -> str:
    """One mkdocstrings block per public module (rendered by the ``:::`` syntax)."""
    import importlib

    parts: list[str] = []
    for module in api_modules():
        if module == "segment_middleware":
            names = [n for n in importlib.import_module(module).__all__ if n != "Settings"]
            parts.append(f"::: {module}\n    options:\n      members: [{', '.join(names)}]")
            parts.append(_SETTINGS_BLOCK)
        else:
            parts.append(f"::: {module}")
        parts.extend(_shadowed_functions(module))
    return "\n\n".join(parts)
