"""Operator commands: ``quorumkv scan`` (list keys cluster-wide).

Registered by the main CLI as plain commands (``app.command("scan")(scan_command)``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from .common import OutputFormat, _addresses, _run_client

DirOpt = Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`).")]
NodeOpt = Annotated[Optional[list[str]], typer.Option("--node", help="Node HOST:PORT (repeatable).")]


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def scan_command(
    match: Annotated[Optional[str], typer.Option("--match", help="Redis glob: *, ?, character classes, backslash escapes.")] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=10_000,
                                       help="Keys each node scans per page (a page is one round trip).")] = 1_000,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Stop after this many keys.")] = None,
    total: Annotated[bool, typer.Option("--total", help="Print only the number of keys (an exact count).")] = False,
    dir: DirOpt = None, node: NodeOpt = None,
    output: Annotated[OutputFormat, typer.Option("-o", "--output", help="table: one key a line; json: a list.")]
    = OutputFormat.table,
) -> None:
    """List the cluster's live keys (each once, in key order; tombstones and expired
    keys hidden). Pages merge every live node's keys; a node that dies mid-scan is
    left out as long as every key still has a live replica (else exit 3)."""
    addresses = _addresses(dir, node)

    def run(c):
        found = 0
        keys = []
        for key in c.scan(match=match, count=count):
            found += 1
            if not total:
                if output == "json":
                    keys.append(_text(key))
                else:
                    sys.stdout.write(_text(key) + "\n")
            if limit is not None and found >= limit:
                break
        return found, keys

    found, keys = _run_client(addresses, run)
    if total:
        print(json.dumps({"keys": found}) if output == "json" else found)
    elif output == "json":
        print(json.dumps(keys))
