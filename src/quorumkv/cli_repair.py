"""``quorumkv repair``: a full anti-entropy pass now, node after node.

Registered by the main CLI as a plain command (``app.command("repair")(repair_command)``).
Each node syncs with every peer it shares ranges with (``Client.repair()``): Merkle
trees compared, differing keys pushed and pulled, tombstones that every replica
holds past the grace purged (docs/antientropy.md). While a node works, its
``Status`` counters drive the progress bar.

Exit codes: 0 every node synced with every peer; 3 some peer could not be synced
(down, timed out); 4 a node could not be reached; 2 bad usage.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .client import Client
from .errors import QuorumKVError

EXIT_UNAVAILABLE = 3
EXIT_UNREACHABLE = 4
#: How often the progress bar polls the repairing node's counters.
PROGRESS_POLL_MS = 200
#: One node's pass may take this long at most before the CLI gives up on it.
REPAIR_NODE_TIMEOUT_MS = 3_600_000
COUNTERS = ("ae_sessions", "ae_keys_compared", "ae_buckets_differing", "ae_keys_pushed", "ae_keys_pulled",
            "tombstones_purged")


def _counters(address: str) -> dict[str, int] | None:
    try:
        with Client([address], timeout_ms=2_000) as c:
            st = c.status()
    except (QuorumKVError, OSError):
        return None
    return {k: st.stats.get(k, 0) for k in COUNTERS} | {"_peers": max(len(st.ring) - 1, 1)}


def repair_node(address: str, on_progress=None) -> dict:
    """Run one node's pass; returns a row for the summary."""
    before = _counters(address)
    if before is None:
        return {"address": address, "node": "?", "ok": False, "error": "unreachable", "seconds": 0.0}
    result: dict = {}

    def work():
        try:
            with Client([address], timeout_ms=2_000) as c:
                result["reply"] = c.repair(timeout_ms=REPAIR_NODE_TIMEOUT_MS)
        except (QuorumKVError, OSError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"

    t0 = time.monotonic()
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_POLL_MS / 1000)
        now = _counters(address) if on_progress else None
        if now is not None:
            on_progress({k: now[k] - before[k] for k in COUNTERS}, before["_peers"])
    seconds = time.monotonic() - t0
    reply = result.get("reply")
    if reply is None:
        return {"address": address, "node": "?", "ok": False, "error": result.get("error", "no reply"),
                "seconds": seconds}
    after = _counters(address) or before
    row = {"address": address, "node": reply.node, "ok": reply.ok, "seconds": round(seconds, 3),
           "peers_synced": reply.peers_synced, "peers_failed": reply.peers_failed, **reply.summary,
           "tombstones_purged": after["tombstones_purged"] - before["tombstones_purged"]}
    if reply.message:
        row["error"] = reply.message
    return row


def repair_command(
    dir: Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`).")] = None,
    node: Annotated[Optional[list[str]], typer.Option("--node", help="Repair only this node HOST:PORT (repeatable).")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="Output format: table or json.")] = "table",
) -> None:
    """Run a full anti-entropy pass now: each node against every peer it shares ranges with.

    Prints what was compared and repaired. With --node, only those nodes run a pass
    (e.g. the one whose disk was replaced); with --dir, every node of the cluster.
    """
    from .cli import _addresses  # noqa: PLC0415 - the main CLI registers this module

    addresses = _addresses(dir, node)
    console = Console(stderr=output == "json")
    rows = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} peers"),
                  TimeElapsedColumn(), console=console, transient=output == "json") as progress:
        for address in addresses:
            task = progress.add_task(address, total=1)

            def update(delta, peers, task=task, address=address):
                progress.update(task, total=peers, completed=min(delta["ae_sessions"], peers),
                                description=(f"{address} compared {delta['ae_keys_compared']} "
                                             f"pushed {delta['ae_keys_pushed']} pulled {delta['ae_keys_pulled']}"))

            row = repair_node(address, update)
            peers = len(row.get("peers_synced", [])) + len(row.get("peers_failed", {}))
            progress.update(task, total=max(peers, 1), completed=max(peers, 1) if row["ok"] else len(row.get("peers_synced", [])),
                            description=f"{row['node']} ({address}) {'done' if row['ok'] else 'FAILED'}")
            rows.append(row)
    if output == "json":
        print(json.dumps(rows))
    else:
        _print_summary(console, rows)
    if any(r.get("error") == "unreachable" for r in rows):
        raise typer.Exit(EXIT_UNREACHABLE)
    if not all(r["ok"] for r in rows):
        raise typer.Exit(EXIT_UNAVAILABLE)


def _print_summary(console: Console, rows: list[dict]) -> None:
    table = Table("node", "peers", "compared", "leaves≠", "pushed", "pulled", "purged", "s", "failed",
                  title="anti-entropy repair (compared: keys; leaves≠: Merkle leaves that differed)")
    totals = dict.fromkeys(("keys_compared", "buckets_differing", "keys_pushed", "keys_pulled",
                            "tombstones_purged"), 0)
    for r in rows:
        for k in totals:
            totals[k] += r.get(k, 0)
        failed = ", ".join(f"{p}: {why}" for p, why in r.get("peers_failed", {}).items()) or r.get("error", "")
        table.add_row(r["node"], str(len(r.get("peers_synced", []))), str(r.get("keys_compared", 0)),
                      str(r.get("buckets_differing", 0)), str(r.get("keys_pushed", 0)), str(r.get("keys_pulled", 0)),
                      str(r.get("tombstones_purged", 0)), f"{r['seconds']:.2f}", failed or "-")
    console.print(table)
    seconds = sum(r["seconds"] for r in rows) or 1e-9
    console.print(f"repaired {totals['keys_pushed'] + totals['keys_pulled']} keys "
                  f"({totals['keys_pushed']} pushed, {totals['keys_pulled']} pulled) after comparing "
                  f"{totals['keys_compared']} in {seconds:.2f} s; {totals['tombstones_purged']} tombstones purged",
                  markup=False, highlight=False)
