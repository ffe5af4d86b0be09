"""A tracked request leaves no reference cycle behind.

``request.segment -> tracker -> user resolver -> request`` once made every Django request's
whole object graph wait for the cyclic garbage collector: ~20 containers per request and a
collection every ~40 requests, about 10 µs per request on average. The bare frameworks
free their requests by reference counting (Flask leaves a few closures of its own), so
each adapter must too: none of our objects, and no request of the framework, may be
found only by the collector.

Nor may the package's modules import one another in a cycle, or take private names from one
another: two static tests over the source (``ast``, at the end of this file), whose lists of
today's exceptions (KNOWN_CYCLES, KNOWN_PRIVATE_IMPORTS) can only shrink.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from wsgiref.util import setup_testing_defaults

import pytest

import segment_middleware
from segment_middleware.context import RequestFacts
from segment_middleware.tracker import Tracker

pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

# The static tests' exceptions: exactly what they find today. Each test fails on a cycle or a
# private name not listed here, and on an entry that no longer occurs: the lists only shrink.
# A cycle is written from its first module in sorted order, each module followed by the kind of
# the import that reaches it (top-level, in-function or TYPE_CHECKING: the one that binds most
# if there are several).
KNOWN_CYCLES: set[str] = set()
# "importer -> module.name": a private name of another module of the package, imported or read.
KNOWN_PRIVATE_IMPORTS: set[str] = set()

OURS = (Tracker, RequestFacts)


def cyclic_garbage(call: Callable[[], Any], n: int = 30) -> list[str]:
    """Type names of the objects that only the collector could free after ``n`` requests."""
    call()
    segment_middleware.flush(5)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(n):
            call()
        gc.collect()
        return [type(o).__name__ for o in gc.garbage]
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def assert_freed(garbage: list[str], *request_types: str) -> None:
    ours = [name for name in garbage if name in {t.__name__ for t in OURS}]
    requests = [name for name in garbage if name in request_types]
    assert not ours and not requests, f"left to the garbage collector: {sorted(set(garbage))}"


def environ(path: str = "/products/1/") -> dict[str, Any]:
    env: dict[str, Any] = {
        "PATH_INFO": path,
        "QUERY_STRING": "utm_source=x",
        "HTTP_USER_AGENT": "pytest",
        "HTTP_COOKIE": 'ajs_anonymous_id="5f1c7a2e-8d3b-4c6e-9a71-2b0f4e6d8c13"',
    }
    setup_testing_defaults(env)
    return env


def drain(app: Callable[..., Any], env: dict[str, Any]) -> None:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    body = app(env, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "events.sqlite3")
    segment_middleware.flush(5)


def test_django_sync_and_user_lookup(store: str) -> None:
    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from segment_middleware.django import SegmentMiddleware, conf

    with override_settings(SEGMENT={"LOCAL_STORE": store}):
        conf.reset()
        try:
            middleware = SegmentMiddleware(lambda request: HttpResponse("ok"))
            factory = RequestFactory()
            garbage = cyclic_garbage(lambda: middleware(factory.get("/products/1/?utm_source=x")))
        finally:
            conf.reset()
    assert_freed(garbage, "WSGIRequest")


def test_flask(store: str) -> None:
    flask = pytest.importorskip("flask")
    from segment_middleware.flask import Segment

    app = flask.Flask(__name__)
    app.config.update(SEGMENT_LOCAL_STORE=store)
    Segment(app)
    app.add_url_rule("/products/<int:pk>/", "product", lambda pk: "ok")
    try:
        garbage = cyclic_garbage(lambda: drain(app, environ()))
    finally:
        app.extensions["segment"].runtime.delivery.shutdown(2)
    assert_freed(garbage, "Request")


def test_plain_wsgi(store: str) -> None:
    from segment_middleware.wsgi import SegmentWSGIMiddleware

    def inner(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = SegmentWSGIMiddleware(inner, user_id=lambda env: env.get("REMOTE_USER"), local_store=store)
    garbage = cyclic_garbage(lambda: drain(app, environ()))
    assert_freed(garbage)


def test_asgi(store: str) -> None:
    pytest.importorskip("starlette")
    from segment_middleware.asgi import SegmentMiddleware

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = SegmentMiddleware(inner, local_store=store)
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    def call() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "scheme": "https",
            "path": "/products/1/",
            "query_string": b"utm_source=x",
            "headers": [(b"host", b"shop.example.com"), (b"user-agent", b"pytest")],
            "client": ("203.0.113.7", 5000),
            "server": ("shop.example.com", 443),
        }
        loop.run_until_complete(app(scope, receive, send))

    try:
        garbage = cyclic_garbage(call)
    finally:
        loop.close()
    assert_freed(garbage)


# Static tests over the package's source: its import graph and the private names its modules
# share. They read the files with ``ast`` and import nothing of them.

TOP_LEVEL = "top-level"
IN_FUNCTION = "in-function"
TYPE_ONLY = "TYPE_CHECKING"
# Of several imports between two modules, the one that binds most names the edge: a top-level
# import runs when its module is imported, one in a function when the function is called, one
# under ``if TYPE_CHECKING:`` never.
BINDING_ORDER = (TOP_LEVEL, IN_FUNCTION, TYPE_ONLY)


class PackageImport(NamedTuple):
    line: int
    kind: str  # TOP_LEVEL, IN_FUNCTION or TYPE_ONLY
    path: tuple[str, ...]  # the module imported: segment_middleware.<path>
    name: str | None  # the name ``from <path> import name`` takes from it; None: the module itself
    bound: tuple[str, tuple[str, ...]] | None  # a local name the statement binds to a module, and its path


def source_root() -> Path:
    """The package's source; $NO_CYCLES_SOURCE_ROOT points the static tests at a copy of it."""
    return Path(os.environ.get("NO_CYCLES_SOURCE_ROOT") or Path(segment_middleware.__file__).parent)


def module_sources(root: Path) -> dict[str, Path]:
    """Each module's file by the module's name in the package: ``delivery``, ``django.__init__``."""
    return {".".join(p.relative_to(root).with_suffix("").parts): p for p in sorted(root.rglob("*.py"))}


def module_at(root: Path, path: tuple[str, ...]) -> str | None:
    """The module importing ``segment_middleware.<path>`` runs: its file, or a package's __init__."""
    if root.joinpath(*path, "__init__.py").is_file():
        return ".".join((*path, "__init__"))
    if path and root.joinpath(*path[:-1], f"{path[-1]}.py").is_file():
        return ".".join(path)
    return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def import_statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module, with its kind."""

    def walk(nodes: list[Any], kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, kind
            elif isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
            ):
                yield from walk(node.body, TYPE_ONLY)
                yield from walk(node.orelse, kind)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = TYPE_ONLY if kind == TYPE_ONLY else IN_FUNCTION
                yield from walk([*ast.iter_child_nodes(node)], inner)
            else:
                yield from walk([*ast.iter_child_nodes(node)], kind)

    yield from walk([tree], TOP_LEVEL)


def package_imports(root: Path, module: str, tree: ast.Module) -> Iterator[PackageImport]:
    """Each import of a module of the package in ``module``'s source, relative or absolute.

    ``from .x import name`` imports the submodule ``x.name`` if there is one, else ``x``;
    ``from . import x`` imports ``x``; a package is its ``__init__``.
    """
    package = root.name
    here = tuple(module.split("."))[:-1]  # the package ``from . import`` reads from
    for node, kind in import_statements(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                first, *rest = alias.name.split(".")
                if first == package and module_at(root, tuple(rest)) is not None:
                    # ``import segment_middleware.x`` binds ``segment_middleware``; ``... as y``, x.
                    bound = (alias.asname, tuple(rest)) if alias.asname else (package, ())
                    yield PackageImport(node.lineno, kind, tuple(rest), None, bound)
            continue
        if node.level:
            base = (*here[: len(here) - node.level + 1], *(node.module or "").split("."))
        elif node.module and node.module.split(".")[0] == package:
            base = tuple(node.module.split(".")[1:])
        else:
            continue
        base = tuple(part for part in base if part)
        if module_at(root, base) is None:
            continue
        for alias in node.names:
            path = (*base, alias.name)
            if root.joinpath(*base).is_dir() and module_at(root, path) is not None:
                yield PackageImport(node.lineno, kind, path, None, (alias.asname or alias.name, path))
            else:
                yield PackageImport(node.lineno, kind, base, alias.name, None)


def parsed(root: Path) -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in module_sources(root).items()}


def import_graph(root: Path) -> dict[str, dict[str, str]]:
    """``graph[a][b]``: the kind of the import of module ``b`` by module ``a`` that binds most."""
    graph: dict[str, dict[str, str]] = {}
    for module, tree in parsed(root).items():
        edges = graph.setdefault(module, {})
        for imported in package_imports(root, module, tree):
            target = module_at(root, imported.path)
            assert target is not None
            if target != module:
                edges[target] = min(edges.get(target, TYPE_ONLY), imported.kind, key=BINDING_ORDER.index)
    return graph


def import_cycles(root: Path) -> set[str]:
    """Every elementary cycle of the import graph, written as the entries of KNOWN_CYCLES."""
    graph = import_graph(root)
    cycles: set[str] = set()

    def extend(path: list[str]) -> None:
        for target in sorted(graph[path[-1]]):
            if target == path[0]:
                steps = zip(path, [*path[1:], target], strict=True)
                cycles.add(" -> ".join([path[0], *(f"{b} ({graph[a][b]})" for a, b in steps)]))
            elif target > path[0] and target not in path:  # each cycle once: from its first module
                extend([*path, target])

    for start in sorted(graph):
        extend([start])
    return cycles


def private_name_uses(root: Path) -> dict[str, list[str]]:
    """Each private name a module takes from another module of the package ("cli -> tracker._id"),
    with file:line of each use: ``from .x import _name``, and ``x._name`` where ``x`` is bound to
    a module of the package by an import (``from . import x``, ``import segment_middleware.x as x``).
    """
    uses: dict[str, list[str]] = {}
    sources = module_sources(root)
    for module, tree in parsed(root).items():
        where = sources[module].relative_to(root.parent)
        bound: dict[str, tuple[str, ...]] = {}
        for imported in package_imports(root, module, tree):
            target = module_at(root, imported.path)
            if imported.name is not None and is_private(imported.name) and target != module:
                line = f"{where}:{imported.line}: imports {imported.name} from {target}"
                uses.setdefault(f"{module} -> {target}.{imported.name}", []).append(line)
            if imported.bound is not None:
                bound[imported.bound[0]] = imported.bound[1]
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and is_private(node.attr)):
                continue
            attributes: list[str] = []
            value = node.value
            while isinstance(value, ast.Attribute):
                attributes.insert(0, value.attr)
                value = value.value
            if not (isinstance(value, ast.Name) and value.id in bound):
                continue
            path = bound[value.id]
            for attribute in attributes:  # ``segment_middleware.tracker._id``: down to the module
                path = (*path, attribute)
                if module_at(root, path) is None:
                    break
            else:
                target = module_at(root, path)
                if target != module:
                    line = f"{where}:{node.lineno}: {ast.unparse(node)}"
                    uses.setdefault(f"{module} -> {target}.{node.attr}", []).append(line)
    return uses


def test_the_package_has_no_import_cycles() -> None:
    cycles = import_cycles(source_root())
    new = sorted(cycles - KNOWN_CYCLES)
    gone = sorted(KNOWN_CYCLES - cycles)
    report = []
    if new:
        report.append("Import cycles among the package's modules (each module followed by the kind of")
        report.append("the import that reaches it; break each cycle, do not list it in KNOWN_CYCLES):")
        report.extend(f"    {cycle}" for cycle in new)
    if gone:
        report.append("KNOWN_CYCLES entries no longer found (remove them: the list only shrinks):")
        report.extend(f"    {cycle}" for cycle in gone)
    if report:
        pytest.fail("\n".join(report), pytrace=False)


def test_no_module_imports_another_modules_private_names() -> None:
    uses = private_name_uses(source_root())
    new = [use for name in sorted(uses.keys() - KNOWN_PRIVATE_IMPORTS) for use in uses[name]]
    gone = sorted(KNOWN_PRIVATE_IMPORTS - uses.keys())
    report = []
    if new:
        report.append("Private names of another module of the package (make them public, or move the")
        report.append("code that needs them; do not list them in KNOWN_PRIVATE_IMPORTS):")
        report.extend(f"    {use}" for use in new)
    if gone:
        report.append("KNOWN_PRIVATE_IMPORTS entries no longer found (remove them: the list only shrinks):")
        report.extend(f"    {name}" for name in gone)
    if report:
        pytest.fail("\n".join(report), pytrace=False)
