"""The fast start-up path of the CLI: ``get``/``put``/``delete``/``cluster status``/
``--version`` are parsed by argparse in ``quorumkv.cli.fast`` without importing Typer,
Rich, numpy or asyncio; everything else goes to the Typer app in ``cli/commands.py``.

Checked here: both parsers know exactly the same arguments and options; the fast
commands import none of the heavy modules; the Typer declarations of the same
commands run the same code. (Start-up time itself is measured by
benchmarks/bench_cli_startup.py, not asserted.)"""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest
import typer.main
from typer.testing import CliRunner

from quorumkv.cli import fast as cli
from quorumkv.cli.localcluster import LocalCluster

HEAVY = ("typer", "click", "rich", "numpy", "matplotlib", "asyncio", "redis", "structlog", "quorumkv.cli.commands",
         "quorumkv.sim", "quorumkv.analysis", "quorumkv.shell", "quorumkv.core.node")


def _click_command(words: tuple[str, ...]):
    cmd = typer.main.get_command(cli.app)
    for word in words:
        cmd = cmd.commands[word]
    return cmd


@pytest.mark.parametrize("words", list(cli.fast_parsers()))
def test_fast_parser_and_typer_declare_the_same_command_line(words):
    parser = cli.fast_parsers()[words]
    cmd = _click_command(words)
    typer_args = [p.name for p in cmd.params if p.param_type_name == "argument"]
    fast_args = [a.dest for a in parser._actions if not a.option_strings]
    assert fast_args == typer_args
    typer_opts = {p.name: p for p in cmd.params if p.param_type_name == "option"}
    fast_opts = {a.dest: a for a in parser._actions if a.option_strings}
    assert set(fast_opts) == set(typer_opts)
    for name, action in fast_opts.items():
        opt = typer_opts[name]
        assert set(action.option_strings) == set(opt.opts) | set(opt.secondary_opts), name
        assert (type(action).__name__ == "_StoreTrueAction") == bool(opt.is_flag), name
        assert (type(action).__name__ == "_AppendAction") == bool(opt.multiple), name
        assert bool(action.required) == bool(opt.required), name
        ann = opt.type_descriptor.annotation
        if action.choices is not None:
            assert list(action.choices) == [e.value for e in ann], name
        assert (action.type is float) == (ann is float or float in typing.get_args(ann)), name


def _modules_after(argv: list[str], stdin: str = "") -> tuple[int, list[str]]:
    """Run ``quorumkv.cli.main(argv)`` in a fresh interpreter: (exit code, heavy modules loaded)."""
    code = ("import json, sys\n"
            "from quorumkv.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "    rc = 0\n"
            "except SystemExit as exc:\n"
            "    rc = exc.code\n"
            f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r}))\n"
            "print(json.dumps([rc, heavy]), file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=60)
    rc, heavy = json.loads(res.stderr.strip().splitlines()[-1])
    return rc, heavy


def test_fast_commands_import_nothing_heavy(tmp_path):
    nowhere = "127.0.0.1:1"  # nothing listens: the command runs to its exit 4
    cl = LocalCluster(str(tmp_path / "c"))
    cl.create(2, base_port=7000, replicas=2)  # a cluster directory; no node runs
    for argv, stdin, want_rc in ((["--version"], "", 0),
                                 (["get", "k", "--node", nowhere], "", 4),
                                 (["put", "k", "-", "--node", nowhere], "value", 4),
                                 (["delete", "k", "--node", nowhere, "--w", "ALL"], "", 4),
                                 (["cluster", "status", "--dir", cl.root, "-o", "json"], "", 0),
                                 (["cluster", "status", "--dir", cl.root], "", 0)):
        rc, heavy = _modules_after(argv, stdin)
        assert rc == want_rc, argv
        assert heavy == [], (argv, heavy)
    # what the fast path does not take goes to Typer (which reports the usage error)
    rc, heavy = _modules_after(["get", "k", "--no-such-option"])
    assert rc == 2 and "typer" in heavy


def test_typer_declarations_run_the_same_commands(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli.app, ["get", "k", "--node", "127.0.0.1:1"])
    assert res.exit_code == 4 and "no node reachable" in res.output
    res = runner.invoke(cli.app, ["put", "k", "--node", "127.0.0.1:1"])
    assert res.exit_code == 2 and "missing VALUE" in res.output
    cl = LocalCluster(str(tmp_path / "c"))
    cl.create(2, base_port=7000, replicas=2)
    res = runner.invoke(cli.app, ["cluster", "status", "--dir", cl.root, "-o", "json"])
    rows = json.loads(res.output)
    assert res.exit_code == 0 and [(r["id"], r["state"]) for r in rows] == [("n1", "down"), ("n2", "down")]
    res = runner.invoke(cli.app, ["cluster", "status", "--dir", cl.root])
    assert res.exit_code == 0 and "no node answered" in res.output
