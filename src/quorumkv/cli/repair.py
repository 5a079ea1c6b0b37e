"""``quorumkv repair``: a full anti-entropy pass now, node after node.

Registered by the main CLI as a plain command (``app.command("repair")(repair_command)``).
Each node syncs with every peer it shares ranges with (``Client.repair()``): Merkle
trees compared, differing keys pushed and pulled, tombstones that every replica
holds past the grace purged (docs/antientropy.md). While a node works, its
``Status`` counters drive the progress bar.

Before it starts, ``repair`` waits (at most ``REPAIR_READY_TIMEOUT_MS``) until the
nodes it repairs see every peer they share ranges with as up — with ``--dir``, until
every node of the cluster runs and sees every other up with a working link — since
a pass skips a peer it believes down. It never reports success for a pass that
skipped or failed a peer: the exit code is then 3 and one line on stderr names the
nodes and why.

Exit codes: 0 every node synced with every peer; 3 some peer could not be synced
(not running, seen down, timed out); 4 a node could not be reached; 2 bad usage.
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

from .common import EXIT_UNAVAILABLE, EXIT_UNREACHABLE, OutputFormat, _addresses, _cluster, _fail
from ..client import Client
from ..errors import QuorumKVError
#: How often the progress bar polls the repairing node's counters.
PROGRESS_POLL_MS = 200
#: One node's pass may take this long at most before the CLI gives up on it.
REPAIR_NODE_TIMEOUT_MS = 3_600_000
#: Before the passes start, wait at most this long for the nodes to see their peers
#: up (a node restarted a moment ago is still "down" to the others for a while).
REPAIR_READY_TIMEOUT_MS = 30_000
#: How often that wait asks the nodes for their view.
READY_POLL_MS = 100
#: Problems named on the one error line at most (the rest are counted).
PROBLEMS_SHOWN_MAX = 4
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


def _one_line(problems: list[str]) -> str:
    shown = "; ".join(problems[:PROBLEMS_SHOWN_MAX])
    more = len(problems) - PROBLEMS_SHOWN_MAX
    return shown + (f" (and {more} more)" if more > 0 else "")


def _peer_problems(address: str) -> list[str]:
    """Why the node at ``address`` would skip a peer now: the peers it shares ranges
    with (those its pass syncs with) that it does not see up."""
    from ..core.antientropy import shares_ranges
    from ..core.ring import Ring

    try:
        with Client([address], timeout_ms=2_000) as c:
            st, n = c.status(), c.ping().n
    except (QuorumKVError, OSError):
        return [f"{address} does not answer"]
    states = {mv.node: mv for mv in st.members}
    ring = Ring(st.ring, n) if st.node in st.ring else None
    peers = [p for p in st.ring if p != st.node and ring is not None and shares_ranges(ring, st.node, p)]
    return [f"{st.node} sees {p} as {states[p].state} (phi {states[p].phi:.1f})" if p in states
            else f"{st.node} does not know {p}"
            for p in peers if p not in states or states[p].state != "up"]


def wait_until_ready(dir: str | None, addresses: list[str], timeout_ms: int = REPAIR_READY_TIMEOUT_MS) -> None:
    """Return once a pass would not skip a peer; else exit 3 naming who and why."""
    if dir:
        from .localcluster import NotReadyError

        cl = _cluster(dir)
        live = {n.id for n in cl.live_nodes()}
        stopped = [n.id for n in cl.nodes if n.id not in live]
        if stopped:
            _fail(EXIT_UNAVAILABLE, f"repair not started: {', '.join(stopped)} not running "
                  f"(start with `quorumkv cluster restart NODE_ID --dir {dir}`)")
        try:
            cl.wait_converged(cl.nodes, timeout_ms)
        except NotReadyError as exc:
            _fail(EXIT_UNAVAILABLE, f"repair not started: {exc}")
        return
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        problems = [p for a in addresses for p in _peer_problems(a)]
        if not problems:
            return
        if time.monotonic() > deadline:
            _fail(EXIT_UNAVAILABLE, f"repair not started: not ready after {timeout_ms} ms: {_one_line(problems)}")
        time.sleep(READY_POLL_MS / 1000)


def repair_command(
    dir: Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`).")] = None,
    node: Annotated[Optional[list[str]], typer.Option("--node", help="Repair only this node HOST:PORT (repeatable).")] = None,
    output: Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format: table or json.")] = OutputFormat.table,
    ready_timeout_ms: Annotated[int, typer.Option(
        "--ready-timeout-ms", min=0, help="Wait at most this long for the nodes to see their peers up.")] = REPAIR_READY_TIMEOUT_MS,
) -> None:
    """Run a full anti-entropy pass now: each node against every peer it shares ranges with.

    Prints what was compared and repaired. With --node, only those nodes run a pass
    (e.g. the one whose disk was replaced); with --dir, every node of the cluster.
    Waits first (bounded) until those nodes see their peers up.
    """
    addresses = _addresses(dir, node)
    wait_until_ready(None if node else dir, addresses, ready_timeout_ms)
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
    unreachable = [r["address"] for r in rows if r.get("error") == "unreachable"]
    if unreachable:
        _fail(EXIT_UNREACHABLE, f"repair incomplete: {', '.join(unreachable)} could not be reached")
    failed = [f"{r['node']} could not sync with {p} ({why})" for r in rows for p, why in r.get("peers_failed", {}).items()]
    failed += [f"{r['node']} ({r['address']}): {r['error']}" for r in rows
               if not r["ok"] and not r.get("peers_failed") and r.get("error")]
    failed += [f"{r['node']} ({r['address']}) failed" for r in rows
               if not r["ok"] and not r.get("peers_failed") and not r.get("error")]
    if failed:
        _fail(EXIT_UNAVAILABLE, f"repair incomplete: {_one_line(failed)}")


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
