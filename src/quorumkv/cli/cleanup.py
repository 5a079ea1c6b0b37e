"""``quorumkv cleanup``: nodes drop the records they no longer replicate (Cassandra's
``nodetool cleanup``; the node side is ``core/cleanup.py``).

Registered by the main CLI as a plain command (``app.command("cleanup")(cleanup_command)``).
Node after node (every node of the cluster, or the ones named): the node scans its
store at ``--keys-per-s`` (default: the node's ``CLEANUP_KEYS_PER_S``) and deletes each
record whose key it does not replicate under the current ring, at exactly the version
it scanned. Refused, with the node's one-line reason, while a ring change is in
progress. ``--dry-run`` counts and drops nothing.

Exit codes: 0 done on every node; 2 refused (a ring change in progress, bad option);
3 a node's cleanup stopped early (the ring changed, storage error); 4 a node could
not be reached.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from ..client import Client
from ..errors import InvalidRequestError, QuorumKVError

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNREACHABLE = 4
#: How often the progress bar polls the node's counters.
PROGRESS_POLL_MS = 200
#: One node's cleanup may take this long at most before the CLI stops watching it
#: (it goes on on the node; ``cluster status`` / ``Status`` shows its counters).
CLEANUP_NODE_WATCH_MS = 24 * 3_600_000

out = Console()
err = Console(stderr=True)


def _stats(address: str) -> dict | None:
    try:
        with Client([address], timeout_ms=2_000) as c:
            return dict(c.status().stats)
    except (QuorumKVError, OSError):
        return None


def _targets(dir_: str | None, node: list[str] | None, node_ids: list[str]) -> list[tuple[str, str]]:
    """(node id or address, address) to clean, in order."""
    if dir_:
        from .localcluster import LocalCluster

        cl = LocalCluster(dir_)
        if not cl.exists:
            err.print(f"no cluster in {dir_}", markup=False)
            raise typer.Exit(EXIT_USAGE)
        nodes = [n for n in cl.nodes if not node_ids or n.id in node_ids]
        unknown = sorted(set(node_ids) - {n.id for n in cl.nodes})
        if unknown:
            err.print(f"unknown node(s) {', '.join(unknown)} in {dir_}", markup=False)
            raise typer.Exit(EXIT_USAGE)
        return [(n.id, n.address) for n in nodes]
    if node:
        return [(a, a) for a in node]
    err.print("say which cluster: --dir DIR or --node HOST:PORT", markup=False)
    raise typer.Exit(EXIT_USAGE)


def clean_node(name: str, address: str, dry_run: bool, keys_per_s: int, progress: Progress) -> dict:
    """Start one node's cleanup and watch it; returns a summary row."""
    row = {"node": name, "address": address, "ok": False, "error": ""}
    before = _stats(address)
    if before is None:
        row["error"] = "unreachable"
        return row
    try:
        with Client([address], timeout_ms=5_000) as c:
            keys = max(c.ping().keys, 0)
            c.cleanup(dry_run=dry_run, keys_per_s=keys_per_s)
    except InvalidRequestError as exc:
        row["error"] = str(exc)
        row["refused"] = True
        return row
    except (QuorumKVError, OSError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    task = progress.add_task(f"{name}{' (dry run)' if dry_run else ''}", total=keys or None, detail="")
    deadline = time.monotonic() + CLEANUP_NODE_WATCH_MS / 1000
    st = before
    while time.monotonic() < deadline:
        time.sleep(PROGRESS_POLL_MS / 1000)
        now = _stats(address)
        if now is None:
            continue
        st = now
        progress.update(task, completed=st.get("cleanup_keys_scanned", 0),
                        detail=f"not replicated {st.get('cleanup_keys_not_replicated', 0)}, "
                               f"dropped {st.get('cleanup_keys_dropped', 0)}")
        if not st.get("cleanup_running") and st.get("cleanup_runs", 0) > before.get("cleanup_runs", 0):
            break
    else:
        row["error"] = f"still running after {CLEANUP_NODE_WATCH_MS} ms (it goes on; watch `Status`)"
        return row
    row.update(scanned=st.get("cleanup_keys_scanned", 0), not_replicated=st.get("cleanup_keys_not_replicated", 0),
               dropped=st.get("cleanup_keys_dropped", 0))
    if st.get("cleanup_aborted", 0) > before.get("cleanup_aborted", 0):
        row["error"] = "stopped early (the ring changed or storage failed; see the node's log) — run it again"
    else:
        row["ok"] = True
    return row


def cleanup_command(
    node_ids: Annotated[Optional[list[str]], typer.Argument(help="Nodes to clean (default: all; with --dir).")] = None,
    dir: Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`).")] = None,
    node: Annotated[Optional[list[str]], typer.Option("--node", help="Node HOST:PORT (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be dropped; drop nothing.")] = False,
    keys_per_s: Annotated[int, typer.Option("--keys-per-s", help="Scan rate bound (0: the node's default).")] = 0,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """Drop the data each node no longer replicates under the current ring (after a
    join moved ranges away); throttled, with progress. Refused during a ring change."""
    if keys_per_s < 0:
        err.print("--keys-per-s must be >= 0", markup=False)
        raise typer.Exit(EXIT_USAGE)
    targets = _targets(dir, node, list(node_ids or []))
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} keys"),
                  TextColumn("{task.fields[detail]}"), console=out if output != "json" else err,
                  transient=False) as progress:
        for name, address in targets:
            row = clean_node(name, address, dry_run, keys_per_s, progress)
            rows.append(row)
            if row.get("refused"):
                break  # a ring change is in progress: the next node would refuse too
    if output == "json":
        print(json.dumps(rows))
    else:
        table = Table("node", "scanned", "not replicated", "would drop" if dry_run else "dropped", "result",
                      title="cleanup (dry run: nothing dropped)" if dry_run else "cleanup")
        for r in rows:
            table.add_row(r["node"], str(r.get("scanned", "-")), str(r.get("not_replicated", "-")),
                          str(r.get("not_replicated" if dry_run else "dropped", "-")), r["error"] or "ok")
        out.print(table)
    for r in rows:
        if r["error"]:
            err.print(f"{r['node']}: {r['error']}", markup=False, highlight=False, soft_wrap=True)
    if any(r.get("refused") for r in rows):
        raise typer.Exit(EXIT_USAGE)
    if any(r["error"] == "unreachable" for r in rows):
        raise typer.Exit(EXIT_UNREACHABLE)
    if any(r["error"] for r in rows):
        raise typer.Exit(EXIT_UNAVAILABLE)
