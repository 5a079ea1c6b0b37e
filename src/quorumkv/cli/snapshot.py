"""``quorumkv snapshot`` and ``quorumkv restore``: per-node backups and putting them back.

Registered by the main CLI as plain commands. ``snapshot`` asks every node named
(``--node``) or every node of a local cluster (``--dir``) for a consistent snapshot
of its own storage, all at once, while they serve; each lands on the node's host
under ``<data_dir>/snapshots/<tag>/`` (shell/snapshot.py). A progress bar per node
follows the node's ``snapshot_done``/``snapshot_total`` counters.

``restore`` is offline, on the node's host: the node(s) must be stopped. With
``--dir`` it restores nodes of a local cluster from ``<node dir>/snapshots/<tag>``;
with ``--data-dir`` (and ``--from`` a snapshot directory) one node started by
``quorumkv serve``. Afterwards start the node(s) and run ``quorumkv repair``: the
writes since the snapshot come back from the other replicas (docs/operations.md,
"Backup and restore").

Exit codes: 0 done; 2 bad usage (a bad tag, a snapshot that is not that node's, a
node still running); 3 a node failed to take its snapshot; 4 a node could not be
reached.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .common import EXIT_UNAVAILABLE, EXIT_UNREACHABLE, EXIT_USAGE, OutputFormat, _addresses, _cluster, _fail
from ..client import Client
from ..errors import QuorumKVError

#: How often the progress bars poll the nodes' counters.
PROGRESS_POLL_MS = 200
#: One node's snapshot may take this long at most before the CLI gives up on it.
SNAPSHOT_NODE_TIMEOUT_MS = 3_600_000


def _progress_of(address: str) -> tuple[int, int] | None:
    try:
        with Client([address], timeout_ms=2_000) as c:
            stats = c.status().stats
    except (QuorumKVError, OSError):
        return None
    return stats.get("snapshot_done", 0), stats.get("snapshot_total", 0)


def snapshot_node(address: str, tag: str, on_progress=None) -> dict:
    """Take one node's snapshot; returns a row for the summary."""
    result: dict = {}

    def work():
        try:
            with Client([address], timeout_ms=5_000) as c:
                result["reply"] = c.snapshot(tag, timeout_ms=SNAPSHOT_NODE_TIMEOUT_MS)
        except (QuorumKVError, OSError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["unreachable"] = isinstance(exc, (OSError, ConnectionError))

    t0 = time.monotonic()
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_POLL_MS / 1000)
        if on_progress is not None and worker.is_alive():
            p = _progress_of(address)
            if p is not None:
                on_progress(*p)
    row = {"address": address, "seconds": round(time.monotonic() - t0, 3)}
    reply = result.get("reply")
    if reply is None:
        return row | {"node": "?", "ok": False, "error": result.get("error", "no reply"),
                      "unreachable": result.get("unreachable", False)}
    return row | {"node": reply.node, "ok": reply.ok, "path": reply.path, "keys": reply.keys,
                  "bytes": reply.bytes, "taken_ms": reply.taken_ms, **({"error": reply.message} if reply.message else {})}


def snapshot_command(
    dir: Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`): every node.")] = None,
    node: Annotated[Optional[list[str]], typer.Option("--node", help="Snapshot this node HOST:PORT (repeatable).")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="Snapshot name (default: the UTC time, 20260101T120000Z).")] = None,
    output: Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format: table or json.")] = OutputFormat.table,
) -> None:
    """Take a consistent snapshot of each node's storage while it serves.

    Each node writes its snapshot on its own host under DATA_DIR/snapshots/TAG/.
    Every write a node acknowledged before its snapshot started is in it.
    """
    from ..shell.snapshot import SnapshotError, default_tag, validate_tag

    tag = tag or default_tag()
    try:
        validate_tag(tag)
    except SnapshotError as exc:
        _fail(EXIT_USAGE, str(exc))
    addresses = _addresses(dir, node)
    console = Console(stderr=output == "json")
    rows: dict[str, dict] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=output == "json") as progress:
        tasks = {a: progress.add_task(a, total=None) for a in addresses}

        def one(address):
            task = tasks[address]
            row = snapshot_node(address, tag, lambda done, total: progress.update(task, completed=done,
                                                                                  total=total or None))
            rows[address] = row
            progress.update(task, total=1, completed=1 if row["ok"] else 0,
                            description=f"{row['node']} ({address}) {'done' if row['ok'] else 'FAILED'}")

        workers = [threading.Thread(target=one, args=(a,), daemon=True) for a in addresses]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    ordered = [rows[a] for a in addresses]
    if output == "json":
        print(json.dumps({"tag": tag, "nodes": ordered}))
    else:
        for r in ordered:
            if r["ok"]:
                console.print(f"{r['node']}: {r['keys']} keys, {r['bytes']} bytes -> {r['path']}",
                              markup=False, highlight=False)
        console.print(f"snapshot {tag}: {sum(r['ok'] for r in ordered)} of {len(ordered)} nodes",
                      markup=False, highlight=False)
    unreachable = [r["address"] for r in ordered if r.get("unreachable")]
    if unreachable:
        _fail(EXIT_UNREACHABLE, f"snapshot {tag} incomplete: {', '.join(unreachable)} could not be reached")
    failed = [f"{r['node']} ({r['address']}): {r.get('error', 'failed')}" for r in ordered if not r["ok"]]
    if failed:
        _fail(EXIT_UNAVAILABLE, f"snapshot {tag} incomplete: {'; '.join(failed)}")


def restore_command(
    node_ids: Annotated[Optional[list[str]], typer.Argument(help="Nodes to restore (with --dir; default: all).",
                                                            show_default=False)] = None,
    dir: Annotated[Optional[str], typer.Option("--dir", help="Local cluster whose nodes to restore.")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="With --dir: the snapshot under each node's snapshots/.")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="A `quorumkv serve` node's data_dir.")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="With --data-dir: the snapshot directory.")] = None,
    node_id: Annotated[Optional[str], typer.Option("--node-id", help="With --data-dir: check the snapshot is this node's.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Restore a subset of nodes from a snapshot older than "
                                                        "tombstone_gc_grace_ms (deleted keys may come back).")] = False,
) -> None:
    """Rebuild stopped nodes from their snapshots (offline, on the node's host).

    Then start them and run `quorumkv repair`: writes made after the snapshot come
    back from the other replicas.
    """
    from ..shell.config import NodeConfig
    from ..shell.snapshot import SnapshotError, read_manifest, restore_node_dir

    if (dir is None) == (data_dir is None):
        _fail(EXIT_USAGE, "say what to restore: --dir DIR --tag TAG [NODE_ID...], or --data-dir PATH --from SNAPSHOT_DIR")
    if data_dir is not None:
        if not from_:
            _fail(EXIT_USAGE, "--data-dir needs --from SNAPSHOT_DIR")
        try:
            man = restore_node_dir(from_, data_dir, node_id=node_id)
        except (SnapshotError, OSError) as exc:
            _fail(EXIT_USAGE, f"restore failed: {exc}")
        print(f"restored {man['node']} into {data_dir}: {man['keys']} keys as of {_when(man['taken_ms'])}; "
              "start it, then run `quorumkv repair --node HOST:PORT` for it")
        return
    if not tag:
        _fail(EXIT_USAGE, "--dir needs --tag TAG (the snapshot to restore)")
    cl = _cluster(dir)
    try:
        nodes = [cl.node(n) for n in node_ids] if node_ids else list(cl.nodes)
    except KeyError as exc:
        _fail(EXIT_USAGE, str(exc.args[0]))
    running = [n.id for n in nodes if n.running()]
    if running:
        _fail(EXIT_USAGE, f"restore refused: {', '.join(running)} still running (stop it first: "
              f"`quorumkv cluster kill NODE_ID --dir {dir} --signal TERM`)")
    subset = len(nodes) < len(cl.nodes)
    plans = []
    for n in nodes:
        snap = os.path.join(n.dir, "snapshots", tag)
        try:
            man = read_manifest(snap)
            cfg = NodeConfig.load(n.config_file)
        except (SnapshotError, OSError, ValueError) as exc:
            _fail(EXIT_USAGE, f"restore refused: {n.id}: {exc}")
        age_ms = int(time.time() * 1000) - man["taken_ms"]
        if subset and cfg.tombstone_gc and age_ms > cfg.tombstone_gc_grace_ms and not force:
            _fail(EXIT_USAGE, f"restore refused: snapshot {tag} of {n.id} is {age_ms // 1000} s old, older than "
                  f"tombstone_gc_grace_ms={cfg.tombstone_gc_grace_ms}: the other replicas may have purged "
                  "tombstones, and keys deleted since would come back (--force to restore anyway)")
        plans.append((n, snap))
    for n, snap in plans:
        try:
            man = restore_node_dir(snap, n.dir, node_id=n.id)
        except (SnapshotError, OSError) as exc:
            _fail(EXIT_USAGE, f"restore failed: {n.id}: {exc}")
        print(f"restored {n.id}: {man['keys']} keys as of {_when(man['taken_ms'])}")
    print(f"next: `quorumkv cluster up --dir {dir}`, then `quorumkv repair --dir {dir}`")


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
