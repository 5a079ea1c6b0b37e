"""The ``quorumkv`` command line: the entry point, and the commands that must start fast.

Exit codes (the contract scripts rely on; docs/operations.md, "Exit codes"):

    0  success
    1  key not found (``get``); a simulation checker failed (``sim``)
    2  bad usage: unknown option or value, invalid request (impossible R/W, empty or
       oversized key/value), bad configuration, a path or port the command cannot use
    3  the quorum could not be met (unavailable, timed out); the cluster did not become
       ready in time; a repair could not reach every replica
    4  no node could be reached
    5  an unexpected internal error (a bug: the one-line message names it)

Start-up: ``get``, ``put``, ``delete``, ``cluster status`` and ``--version`` are
parsed here with argparse and run without importing Typer, Rich or anything the
other commands need (``python -X importtime -c 'import quorumkv.cli'`` shows what
is left). Anything this fast path does not fully understand — ``--help``, a typo, any
other command — goes to the Typer app in ``commands``, which declares every command
(these included, for help and error messages) and calls the same functions. A test
(tests/io/test_cli_startup.py) checks that both parsers know the same options.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from .common import EXIT_OK, OUTPUT_FORMATS, _fail, cmd_delete, cmd_get, cmd_put

def cmd_cluster_status(dir: str | None = None, node: list[str] | None = None, output: str = "table") -> None:
    """Every node's view of the cluster (``status``)."""
    from .status import cmd_cluster_status as run

    run(dir, node, output)


# ------------------------------------------------------------------- fast path
class _NotFast(Exception):
    """The fast parser does not take this command line: hand it to Typer."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # noqa: D102 - never print or exit: Typer reports usage errors
        raise _NotFast(message)

    def exit(self, status=0, message=None):  # noqa: D102
        raise _NotFast(message)


def _parser(prog: str) -> _Parser:
    return _Parser(prog=prog, add_help=False, allow_abbrev=False)


def _cluster_opts(p: _Parser) -> None:
    p.add_argument("--dir")
    p.add_argument("--node", action="append")


def fast_parsers() -> dict[tuple[str, ...], _Parser]:
    """The commands the fast path takes, by their words. tests/io/test_cli_startup.py
    checks these options against the Typer declarations in ``commands``."""
    put = _parser("put")
    put.add_argument("key")
    put.add_argument("value", nargs="?")
    put.add_argument("--w")
    _cluster_opts(put)
    put.add_argument("--target-latency-ms", type=float)
    put.add_argument("--verbose", "-v", action="store_true")
    put.add_argument("--file")
    put.add_argument("--linearizable", action="store_true")
    get = _parser("get")
    get.add_argument("key")
    get.add_argument("--r")
    _cluster_opts(get)
    get.add_argument("--target-fresh", type=float)
    get.add_argument("--within-ms", type=float)
    get.add_argument("--verbose", "-v", action="store_true")
    get.add_argument("--linearizable", action="store_true")
    delete = _parser("delete")
    delete.add_argument("key")
    delete.add_argument("--w")
    _cluster_opts(delete)
    delete.add_argument("--linearizable", action="store_true")
    status = _parser("cluster status")
    _cluster_opts(status)
    status.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    return {("put",): put, ("get",): get, ("delete",): delete, ("cluster", "status"): status}


_FAST_COMMANDS = {("put",): cmd_put, ("get",): cmd_get, ("delete",): cmd_delete,
                  ("cluster", "status"): cmd_cluster_status}


def _fast(argv: list[str]):
    """A callable running ``argv`` without Typer, or None when Typer must take it."""
    if argv in (["--version"], ["-V"]):
        return lambda: print(f"quorumkv {__version__}")
    words = tuple(argv[:2]) if argv[:1] == ["cluster"] else tuple(argv[:1])
    fn = _FAST_COMMANDS.get(words)
    if fn is None:
        return None
    try:
        ns = fast_parsers()[words].parse_args(argv[len(words):])
    except _NotFast:
        return None
    return lambda: fn(**vars(ns))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    run = _fast(argv)
    if run is not None:
        try:
            run()
        except KeyboardInterrupt:
            _fail(130, "interrupted")
        except BrokenPipeError:
            # The reader went away (`quorumkv get k | head -c1`): not our error. Point
            # stdout at /dev/null so the interpreter's final flush does not complain.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(EXIT_OK) from None
        return
    from .commands import run as run_app

    run_app(argv)


def __getattr__(name: str):
    """``quorumkv.cli.app`` (every command registered) and ``cluster_app`` load
    ``commands`` on demand."""
    if name in ("app", "cluster_app"):
        from . import commands

        commands.register_heavy_commands()
        return getattr(commands, name)
    raise AttributeError(f"module 'quorumkv.cli.fast' has no attribute {name!r}")
