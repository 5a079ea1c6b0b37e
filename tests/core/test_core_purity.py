"""The core stays pure: no I/O, clock, randomness or concurrency imports.

Two checks: a static one (every ``import`` in every module of quorumkv.core, any
form, anywhere in the file), and a dynamic one (what importing the core really
loads, in a fresh interpreter, compared with a bare interpreter's baseline).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import quorumkv.core

CORE_DIR = Path(quorumkv.core.__file__).parent
SRC_DIR = CORE_DIR.parent.parent  # .../src
FORBIDDEN = {
    "asyncio", "socket", "time", "os", "random", "threading", "subprocess", "sqlite3",
    "selectors", "signal",
}
#: What must not be loaded, even transitively (msgspec and the stdlib legitimately
#: pull in os, time, threading and friends, so those are checked statically only).
FORBIDDEN_LOADED = {"asyncio", "socket", "sqlite3", "subprocess"}

CORE_MODULES = sorted(CORE_DIR.glob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level module names imported anywhere in ``tree`` (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call):
            # __import__("x") / importlib.import_module("x")
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if fname in ("__import__", "import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value.split(".")[0])
    return names


def test_core_has_modules():
    names = {p.stem for p in CORE_MODULES}
    assert {"ring", "version", "quorum", "framing", "messages", "node"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = imported_modules(tree) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_relative_imports_stay_in_core_or_errors(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = "." * node.level + (node.module or "")
            # "." is core itself; ".." reaches quorumkv, where only errors is pure.
            assert node.level == 1 or target == "..errors", f"{path.name}: from {target} import ..."


@pytest.mark.parametrize(
    "src,expected",
    [
        ("import os", {"os"}),
        ("import os.path as p", {"os"}),
        ("from time import monotonic", {"time"}),
        ("from asyncio.events import get_event_loop", {"asyncio"}),
        ("def f():\n    import socket\n", {"socket"}),
        ("try:\n    import random\nexcept ImportError:\n    pass\n", {"random"}),
        ("x = __import__('threading')", {"threading"}),
        ("import importlib\nimportlib.import_module('sqlite3')", {"importlib", "sqlite3"}),
        ("from . import ring", set()),
    ],
)
def test_checker_catches_every_form(src, expected):
    assert imported_modules(ast.parse(src)) == expected


def _loaded(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
        cwd=str(SRC_DIR),
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


# Load quorumkv.core without running quorumkv/__init__.py (which imports the client,
# and so asyncio and socket): a bare package object stands in for the parent.
_CORE_ONLY = f"""
import sys, types
pkg = types.ModuleType("quorumkv")
pkg.__path__ = [{str(CORE_DIR.parent)!r}]
sys.modules["quorumkv"] = pkg
import quorumkv.core.node, quorumkv.core.framing, quorumkv.core.ring
import quorumkv.core.quorum, quorumkv.core.version, quorumkv.core.consistency
assert "quorumkv.client" not in sys.modules
"""


def test_core_transitively_loads_no_io_modules():
    baseline = _loaded("")
    loaded = _loaded(_CORE_ONLY)
    assert "quorumkv.core.node" in loaded
    added = loaded - baseline
    bad = added & FORBIDDEN_LOADED
    assert not bad, f"importing the core loads {sorted(bad)}"


def test_import_quorumkv_core_node_loads_no_io_modules():
    baseline = _loaded("")
    added = _loaded("import quorumkv.core.node") - baseline
    bad = added & FORBIDDEN_LOADED
    assert not bad, f"`import quorumkv.core.node` loads {sorted(bad)}"
