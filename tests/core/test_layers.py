"""Every import in quorumkv points one way (issue 9, item 4).

The graph is built statically with ``ast`` from every module under src/quorumkv:
``import x``, ``from x import y`` (absolute or relative) and
``importlib.import_module("x")`` / ``__import__("x")`` with a constant name, wherever
they sit in the file.

What counts as an edge:

* **Function-level (lazy) imports count.** Deferring an import hides a cycle from the
  import machinery but not from the reader: the two modules still need each other, and
  the lazy import is usually there *because* of the cycle (``# noqa: PLC0415 -
  server imports this module``). Lazy imports that only save start-up time are fine —
  they are ordinary one-way edges.
* **``if TYPE_CHECKING:`` imports** never run, so they are left out of the cycle check
  (naming a type from the other side is how a cycle is legitimately broken) but still
  obey the layering rules: a type-only import upward is still a dependency upward.
* ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
  ``pkg``. An import of a package (``quorumkv``) does not count as importing what its
  ``__init__`` loads lazily through PEP 562 (the root package's ``__getattr__`` names
  modules in a table, not as imports).

The layering rules (docs/architecture.md, "Layering"):

* ``core/`` imports only ``core/`` and ``quorumkv.errors`` (the exception hierarchy is
  pure: no imports at all, and the core raises InvalidRequestError/ProtocolError that the
  client and the RESP layer catch — one class on both sides of the wire);
* ``runtime/`` (the one effect executor and its Storage/Transport/Clock interfaces)
  imports only ``core/`` and ``quorumkv.errors``: the real node, the simulator and the
  tests supply the edges, so the runtime may not know any of them;
* ``client/`` (a library) imports only ``client/``, ``core/`` and ``quorumkv.errors``:
  never the node's shell, the CLI or contrib;
* ``contrib/`` (optional add-ons) never imports ``shell/`` or ``cli/`` (the Redis record
  layout it shares with the Redis engine is ``core/redis_layout.py``);
* ``shell/`` (the node's I/O) never imports the client, the CLI or contrib;
* ``resp/`` (pure RESP command handlers) never imports ``shell/``;
* ``sim/`` never imports ``shell/`` (the simulator runs the core, not the node runtime);
* ``cli/`` is the top: only ``cli/`` itself, ``verify/`` (a tool the CLI runs) and
  ``quorumkv.__main__`` import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import quorumkv

PKG_DIR = Path(quorumkv.__file__).parent
SRC_DIR = PKG_DIR.parent

#: Cycles not yet broken (none since issue 9's fixes). Each entry is the sorted member list of one
#: strongly connected component; the test fails if one disappears too, so the list
#: only shrinks.
KNOWN_CYCLES: list[list[str]] = [
]


def _module_names() -> dict[str, Path]:
    mods = {}
    for path in PKG_DIR.rglob("*.py"):
        parts = list(path.relative_to(SRC_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _module_names()


def _resolve(name: str) -> str | None:
    """The innermost quorumkv module that ``name`` names (``a.b.C`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(module: str, tree: ast.AST, is_package: bool = False) -> dict[str, bool]:
    """quorumkv modules imported by ``module``: target -> True if type-checking only."""
    package = module if is_package else module.rpartition(".")[0]
    found: dict[str, bool] = {}

    def add(target: str | None, type_only: bool) -> None:
        if target and target != module and target.split(".")[0] == "quorumkv":
            found[target] = found.get(target, True) and type_only

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_type_only = type_only
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit_one(sub, True)
                for sub in child.orelse:
                    visit_one(sub, type_only)
                continue
            visit_one(child, child_type_only)

    def visit_one(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name), type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                add(full if full in MODULES else _resolve(mod), type_only)
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if fname in ("__import__", "import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                    add(_resolve(arg.value), type_only)
        visit(node, type_only)

    visit(tree, False)
    return found


def build_graph() -> dict[str, dict[str, bool]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = imports_of(name, tree, is_package=path.name == "__init__.py")
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative),
    over the edges that run (type-checking-only imports left out)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(t for t, type_only in graph[root].items() if not type_only)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(t for t, to in graph[w].items() if not to))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def _layer(module: str) -> str:
    """``quorumkv.core.ring`` -> ``core``; ``quorumkv.errors`` -> ``errors``; root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


#: Layers ``cli/`` may be imported from: itself, the consistency checker it runs, and
#: ``python -m quorumkv``.
CLI_IMPORTERS = ("cli", "verify", "__main__")


def upward_imports(graph: dict[str, dict[str, bool]]) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        layer = _layer(src)
        for dst in sorted(targets):
            dst_layer = _layer(dst)
            if layer == "core" and dst_layer != "core" and dst != "quorumkv.errors":
                bad.append(f"{src} -> {dst} (core imports only core and quorumkv.errors)")
            elif layer == "client" and dst_layer not in ("client", "core", "errors"):
                bad.append(f"{src} -> {dst} (the client imports only client, core and quorumkv.errors)")
            elif layer == "contrib" and dst_layer in ("shell", "cli"):
                bad.append(f"{src} -> {dst} (contrib/ does not import the node's shell or the CLI)")
            elif layer == "runtime" and dst_layer not in ("core", "runtime") and dst != "quorumkv.errors":
                bad.append(f"{src} -> {dst} (runtime imports only core and quorumkv.errors)")
            elif layer == "shell" and dst_layer in ("client", "cli", "contrib"):
                bad.append(f"{src} -> {dst} (the node's shell does not use the client, the CLI or contrib)")
            elif layer in ("resp", "sim") and dst_layer == "shell":
                bad.append(f"{src} -> {dst} ({layer}/ does not import the node's shell)")
            elif dst_layer == "cli" and layer not in CLI_IMPORTERS:
                bad.append(f"{src} -> {dst} (cli/ is the top layer: only {', '.join(CLI_IMPORTERS)} import it)")
    return bad


GRAPH = build_graph()


def test_graph_sees_the_package():
    assert {"quorumkv.core.node", "quorumkv.shell.server", "quorumkv.client", "quorumkv.cli"} <= set(GRAPH)
    assert "quorumkv.core.node" in GRAPH["quorumkv.shell.server"]
    # the redrawn top: packages, not flat modules (issue 9, item 4)
    assert {"quorumkv.client.sync", "quorumkv.client.aio", "quorumkv.client.base", "quorumkv.client.transport",
            "quorumkv.cli.fast", "quorumkv.cli.common", "quorumkv.cli.commands",
            "quorumkv.contrib.redis_quorum", "quorumkv.core.redis_layout"} <= set(GRAPH)
    top = {m for m in GRAPH if m.count(".") == 1 and not (PKG_DIR / m.split(".")[1]).is_dir()}
    assert top == {"quorumkv.errors", "quorumkv.__main__"}, f"flat modules at the top: {sorted(top)}"


def test_the_node_and_the_simulator_share_the_one_runtime():
    assert "quorumkv.runtime.executor" in GRAPH["quorumkv.runtime"]
    assert "quorumkv.runtime" in GRAPH["quorumkv.shell.server"]
    assert "quorumkv.runtime" in GRAPH["quorumkv.sim.cluster"]
    assert "quorumkv.runtime" in GRAPH["quorumkv.sim.scenario"]


def test_no_import_cycle():
    found = cycles(GRAPH)
    new = [c for c in found if c not in KNOWN_CYCLES]
    gone = [c for c in KNOWN_CYCLES if c not in found]
    detail = "\n".join(
        "  " + " / ".join(c) + ": " + "; ".join(
            f"{a} -> {b}" for a in c for b in sorted(GRAPH[a]) if b in c and not GRAPH[a][b])
        for c in new)
    assert not new, f"import cycle(s):\n{detail}"
    assert not gone, f"fixed, remove from KNOWN_CYCLES: {gone}"


def test_no_upward_import():
    bad = upward_imports(GRAPH)
    assert not bad, "upward import(s):\n  " + "\n  ".join(bad)


# ------------------------------------------------------------- the checker itself
def _graph_of(sources: dict[str, str]) -> dict[str, dict[str, bool]]:
    global MODULES
    saved = MODULES
    MODULES = {name: Path(name) for name in sources}
    try:
        return {name: imports_of(name, ast.parse(src)) for name, src in sources.items()}
    finally:
        MODULES = saved


@pytest.mark.parametrize("src,expected", [
    ("import quorumkv.core.ring", {"quorumkv.core.ring": False}),
    ("from . import ring", {"quorumkv.core.ring": False}),
    ("from .ring import Ring", {"quorumkv.core.ring": False}),
    ("from ..errors import ProtocolError", {"quorumkv.errors": False}),
    ("def f():\n    from ..shell import server\n", {"quorumkv.shell.server": False}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .ring import Ring\n",
     {"quorumkv.core.ring": True}),
    ("import importlib\nimportlib.import_module('quorumkv.shell.server')", {"quorumkv.shell.server": False}),
    ("import os\nfrom msgspec import Struct", {}),
])
def test_checker_sees_every_form(src, expected):
    names = ["quorumkv.core.node", "quorumkv.core.ring", "quorumkv.errors", "quorumkv.shell.server",
             "quorumkv.shell", "quorumkv.core", "quorumkv"]
    graph = _graph_of({n: "" for n in names} | {"quorumkv.core.node": src})
    assert graph["quorumkv.core.node"] == expected


def test_checker_finds_a_lazy_cycle_and_an_upward_import():
    graph = _graph_of({
        "quorumkv.runtime.executor": "from ..sim import cluster",
        "quorumkv.sim.cluster": "", "quorumkv.sim": "", "quorumkv.runtime": "",
        "quorumkv.shell.server": "from .antientropy import x",
        "quorumkv.shell.antientropy": "def f():\n    from .server import now_ms\n",
        "quorumkv.core.ring": "from ..shell import server",
        "quorumkv.shell": "", "quorumkv.core": "", "quorumkv": "",
    })
    assert cycles(graph) == [["quorumkv.shell.antientropy", "quorumkv.shell.server"]]
    assert upward_imports(graph) == [
        "quorumkv.core.ring -> quorumkv.shell.server (core imports only core and quorumkv.errors)",
        "quorumkv.runtime.executor -> quorumkv.sim.cluster (runtime imports only core and quorumkv.errors)"]


@pytest.mark.parametrize("src,dst,why", [
    ("quorumkv.client.sync", "quorumkv.shell.storage", "the client imports only"),
    ("quorumkv.client.base", "quorumkv.cli.common", "the client imports only"),
    ("quorumkv.client.aio", "quorumkv.contrib.redis_quorum", "the client imports only"),
    ("quorumkv.contrib.redis_quorum", "quorumkv.shell.storage_redis", "contrib/ does not import"),
    ("quorumkv.contrib.redis_quorum", "quorumkv.cli.testing", "contrib/ does not import"),
    ("quorumkv.shell.server", "quorumkv.client.sync", "the node's shell does not use"),
    ("quorumkv.shell.server", "quorumkv.contrib.redis_quorum", "the node's shell does not use"),
    ("quorumkv.resp.commands", "quorumkv.cli.common", "cli/ is the top layer"),
])
def test_checker_flags_each_new_rule(src, dst, why):
    graph = {src: {dst: False}, dst: {}}
    bad = upward_imports(graph)
    assert len(bad) == 1 and bad[0].startswith(f"{src} -> {dst} ({why}"), bad


@pytest.mark.parametrize("src,dst", [
    ("quorumkv.client.sync", "quorumkv.client.base"),
    ("quorumkv.client.base", "quorumkv.core.validation"),
    ("quorumkv.contrib.redis_quorum", "quorumkv.core.redis_layout"),
    ("quorumkv.contrib.redis_quorum", "quorumkv.client.base"),
    ("quorumkv.cli.commands", "quorumkv.shell.server"),
    ("quorumkv.verify.runner", "quorumkv.cli.localcluster"),
])
def test_checker_allows_the_downward_edges(src, dst):
    assert upward_imports({src: {dst: False}, dst: {}}) == []
