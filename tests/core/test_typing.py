"""``mypy --strict`` over the pure core and the client (issue 9, item 3), inside the
ordinary test run.

The core's modules are listed explicitly: each one here passes ``--strict`` today and
must keep passing. Add a module once it passes; the goal is every file of ``core/``.
Every file of ``client/`` passes, so the client is checked whole (a new file there
joins by existing). ``--follow-imports=silent``: an imported module that is not listed yet is
still analysed for the types it exports, but its own errors are not reported here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import quorumkv.client
import quorumkv.core

CORE_DIR = Path(quorumkv.core.__file__).parent
CLIENT_DIR = Path(quorumkv.client.__file__).parent
SRC_DIR = CORE_DIR.parent.parent

#: Modules of core/ that pass ``mypy --strict``.
STRICT_CORE_MODULES = [
    "ae_common", "ae_gc", "ae_responder", "ae_session", "antientropy", "casops", "paxos", "paxos_acceptor",
    "paxos_forward", "paxos_proposal", "rc_common", "rc_pull", "rc_push", "ringchange", "tokens", "cleanup",
    "dynamic", "scan", "typed", "clock", "typed_coord",
    "__init__", "consistency", "crdt", "detector", "dvv", "effects", "framing", "hints", "limits", "membership",
    "merkle", "messages", "messages_admin", "messages_ae", "messages_cas", "messages_ring", "messages_scan",
    "messages_typed", "quorum", "rand", "redis_layout", "ring", "ringinfo", "ringsync", "routing", "status",
    "validation", "version",
    "wire",
    # NodeCore split along the request paths (issue 9, item 1)
    "node", "levels", "rounds", "getcore", "putcore", "replica", "handoff", "inspection", "gossip", "parking",
]
#: Every module of core/ is listed (test_every_core_module_is_listed guards that).


def test_every_core_module_is_listed():
    """The goal of the list is all of core/: a new module must pass ``--strict`` from its
    first commit."""
    unlisted = sorted(p.stem for p in CORE_DIR.glob("*.py") if p.stem not in STRICT_CORE_MODULES)
    assert not unlisted, f"core modules not checked by mypy --strict: {unlisted}"


def test_listed_modules_exist():
    missing = [name for name in STRICT_CORE_MODULES if not (CORE_DIR / f"{name}.py").exists()]
    assert not missing, f"listed but not in core/: {missing}"


def _mypy_strict(files: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is not installed: it is in the test extra (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(tmp_path / "mypy_cache"), *files],
        capture_output=True, text=True, cwd=SRC_DIR, timeout=300,
    )


def test_core_passes_mypy_strict(tmp_path):
    result = _mypy_strict([str(CORE_DIR / f"{name}.py") for name in STRICT_CORE_MODULES], tmp_path)
    assert result.returncode == 0, f"mypy --strict found errors:\n{result.stdout}{result.stderr}"


def test_client_passes_mypy_strict(tmp_path):
    files = sorted(str(p) for p in CLIENT_DIR.glob("*.py"))
    assert {"sync.py", "aio.py", "base.py", "typed.py", "transport.py"} <= {Path(f).name for f in files}
    result = _mypy_strict(files, tmp_path)
    assert result.returncode == 0, f"mypy --strict found errors in client/:\n{result.stdout}{result.stderr}"


def test_runtime_passes_mypy_strict(tmp_path):
    """The one effect executor and its edge interfaces (``runtime/``), which the node,
    the simulator and the tests all run on."""
    files = sorted(str(p) for p in (SRC_DIR / "quorumkv" / "runtime").glob("*.py"))
    assert {"executor.py", "interfaces.py"} <= {Path(f).name for f in files}
    result = _mypy_strict(files, tmp_path)
    assert result.returncode == 0, f"mypy --strict found errors in runtime/:\n{result.stdout}{result.stderr}"
