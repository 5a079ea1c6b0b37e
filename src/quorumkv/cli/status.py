"""``quorumkv cluster status`` and ``quorumkv ring``: the cluster as every node sees it.

``cluster status`` works from any machine: given ``--node ADDR`` (or ``--dir`` of a
local cluster, or ``QUORUMKV_NODES``) it asks the first node that answers for its
membership table — every member, including those that joined through ``--seed`` —
then asks each member for its own view (``Status``, in parallel), like Cassandra's
``nodetool status``. Per node: state (as the nodes that answered see it, and where
they disagree), load (records and bytes in local storage), effective ownership of
the ring, hints held, pending streams, clock offset, phi.

Kept free of Typer, Rich and asyncio: ``cluster status`` is on the CLI's fast path.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

#: How long one node may take to answer (a paused node must not stall the command).
STATUS_TIMEOUT_MS = 2_000
#: Nodes asked at once.
STATUS_PARALLEL_MAX = 16


def _ask(address: str, timeout_ms: int = STATUS_TIMEOUT_MS, opts: dict | None = None, errors: dict | None = None):
    """The node's StatusReply, or None (why: in ``errors[address]``). ``opts``: Client
    security options (credentials and CA; the QUORUMKV_* variables otherwise)."""
    from ..client import Client
    from ..errors import QuorumKVError

    try:
        with Client([address], timeout_ms=timeout_ms, **(opts or {})) as c:
            return c.status()
    except (QuorumKVError, OSError) as exc:
        if errors is not None:
            errors[address] = str(exc)
        return None


def gather(addresses: list[str], timeout_ms: int = STATUS_TIMEOUT_MS, opts: dict | None = None) -> dict:
    """Every node's view: ``{"entry": node id or None, "views": {node: StatusReply|None},
    "members": {node: MemberView as the entry node sees it}, "errors": {address: why}}``."""
    entry = None
    errors: dict[str, str] = {}
    for addr in addresses:
        entry = _ask(addr, timeout_ms, opts, errors)
        if entry is not None:
            break
    if entry is None:
        return {"entry": None, "views": {}, "members": {}, "errors": errors}
    members = {mv.node: mv for mv in entry.members}
    others = [mv for mv in entry.members if mv.node != entry.node and mv.status != "left"]
    views = {entry.node: entry}
    with ThreadPoolExecutor(max_workers=min(STATUS_PARALLEL_MAX, max(len(others), 1))) as pool:
        for mv, reply in zip(others, pool.map(lambda mv: _ask(mv.address, timeout_ms, opts, errors), others)):
            views[mv.node] = reply
    for node, reply in list(views.items()):  # members only another node knows of
        if reply is None:
            continue
        for mv in reply.members:
            members.setdefault(mv.node, mv)
    return {"entry": entry.node, "views": views, "members": members, "errors": errors}


def _ownership(views: dict, entry: str) -> dict:
    from ..core.ring import Ring
    from ..core.ringinfo import ownership

    reply = views.get(entry)
    if reply is None or not reply.ring:
        return {}
    n = reply.stats.get("n_configured", 3)
    vnodes = reply.stats.get("vnodes", 256)
    return ownership(Ring(reply.ring, n, vnodes))


def rows(data: dict) -> tuple[list[dict], list[str]]:
    """One row per member, and the disagreements between the views (sentences)."""
    views = data["views"]
    entry = data["entry"]
    if entry is None:
        return [], []
    own = _ownership(views, entry)
    answered = {n: v for n, v in views.items() if v is not None}
    hints_for: dict[str, int] = {}
    for v in answered.values():
        for target, count in v.hints.items():
            hints_for[target] = hints_for.get(target, 0) + count
    out = []
    disagreements = []
    for node, mv in sorted(data["members"].items()):
        seen = {}
        offsets = []
        for observer, v in answered.items():
            for other in v.members:
                if other.node == node:
                    seen[observer] = other.state
                    if other.clock_offset_ms is not None:
                        offsets.append(other.clock_offset_ms)
        states = sorted(set(seen.values()))
        if len(states) > 1:
            by = {s: sorted(o for o, x in seen.items() if x == s) for s in states}
            disagreements.append(f"{node}: " + "; ".join(f"{s} to {', '.join(obs)}" for s, obs in by.items()))
        # the state most nodes report; its own view of itself counts like any other
        state = max(states, key=lambda s: (sum(1 for x in seen.values() if x == s), s == "up")) if states else "unknown"
        mine = answered.get(node)
        stats = mine.stats if mine is not None else {}
        entry_view = next((x for x in views[entry].members if x.node == node), None)
        out.append({
            "id": node,
            "address": mv.address,
            "state": state if mine is not None or state != "up" else "unreachable",
            "status": mv.status,
            "answered": mine is not None,
            "views": seen,
            "keys": stats.get("storage_keys") if mine is not None else None,
            "bytes": stats.get("storage_bytes") if mine is not None else None,
            "ownership": round(own[node]["effective"], 4) if node in own else 0.0,
            "hints_held": sum(mine.hints.values()) if mine is not None else None,
            "hints_for": hints_for.get(node, 0),
            "streams_pending": (stats.get("stream_pending", 0) + max(stats.get("stream_sources_total", 0)
                                - stats.get("stream_sources_done", 0), 0)) if mine is not None else None,
            "clock_offset_ms": max(offsets, key=abs) if offsets else None,
            "phi": entry_view.phi if entry_view is not None and node != entry else None,
            "resp": mine.info.get("resp", "") if mine is not None else "",
            "metrics": mine.info.get("metrics", "") if mine is not None else "",
            "seen_by": entry,
        })
    rings = {tuple(v.ring) for v in answered.values()}
    if len(rings) > 1:
        disagreements.append("ring: " + "; ".join(
            f"{', '.join(sorted(n for n, v in answered.items() if tuple(v.ring) == r))} see [{', '.join(r)}]"
            for r in sorted(rings)))
    return out, disagreements


def _fmt_bytes(n) -> str:
    if n is None or n < 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def cmd_cluster_status(dir: str | None = None, node: list[str] | None = None, output: str = "table") -> None:
    from .common import _STATE_COLOURS, _addresses, format_table

    local = None
    if dir and not node:
        from .common import _cluster

        local = _cluster(dir)
    addresses = _addresses(dir, node)
    data = gather(addresses, opts=local.client_options() if local is not None else None)
    table, disagreements = rows(data)
    if local is not None:
        table = _merge_local(local, table)
    if output == "json":
        print(json.dumps(table))
        if disagreements:
            print("; ".join(disagreements), file=sys.stderr)
        return
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    cells = []
    for r in table:
        pid = "" if local is None else f"{r['pid'] or '-'}"
        cells.append([r["id"], r["address"], *([pid] if local is not None else []), r["state"],
                      "-" if r.get("keys") is None else str(r["keys"]), _fmt_bytes(r.get("bytes")),
                      f"{r['ownership'] * 100:.1f}%", "-" if r.get("hints_held") is None else str(r["hints_held"]),
                      "-" if r.get("streams_pending") is None else str(r["streams_pending"]),
                      "-" if r.get("clock_offset_ms") is None else f"{r['clock_offset_ms']:+d} ms",
                      "-" if r.get("phi") is None else f"{r['phi']:.1f}"])

    def paint(text: str, state: str) -> str:
        return f"\x1b[{_STATE_COLOURS.get(state, '31')}m{text}\x1b[0m" if colour else text

    headers = ["id", "address", *(["pid"] if local is not None else []), "state", "keys", "bytes", "owns",
               "hints", "streams", "clock", "phi"]
    entry = data["entry"]
    why = "; ".join(f"{a}: {e}" for a, e in data["errors"].items() if "refused" in e or "NOAUTH" in e)
    title = (f"{len([r for r in table if r.get('answered')])} of {len(table)} nodes answered (membership from {entry})"
             if entry else "no node answered" + (f" ({why})" if why else ""))
    print(format_table(headers, cells, title, paint={headers.index("state"): paint}))
    for line in disagreements:
        print(f"views differ: {line}")


def _merge_local(local, table: list[dict]) -> list[dict]:
    """With ``--dir``: one row per node of the local cluster (in its order), with its
    pid, and ``down`` for a node whose process is not running."""
    from .localcluster import pid_alive

    by_id = {r["id"]: r for r in table}
    out = []
    for info in local.nodes:
        pid = info.pid()
        alive = pid is not None and pid_alive(pid)
        row = dict(by_id.pop(info.id, {"id": info.id, "address": info.address, "state": "down", "answered": False,
                                       "views": {}, "ownership": 0.0, "phi": None, "clock_offset_ms": None,
                                       "seen_by": None}))
        row.update(pid=pid if alive else None, process="running" if alive else "stopped",
                   resp=row.get("resp") or info.resp, metrics=row.get("metrics") or info.metrics)
        if not alive:
            row["state"] = "down"
        out.append(row)
    out.extend(by_id.values())  # members the directory does not list (joined by --seed elsewhere)
    return out


def cmd_ring(dir: str | None, node: list[str] | None, output: str, tokens: bool) -> None:
    from .common import _addresses, format_table
    from ..core.ring import Ring
    from ..core.ringinfo import TOKEN_SPACE, arcs, ownership

    opts = None
    if dir and not node:
        from .common import _cluster

        opts = _cluster(dir).client_options()
    data = gather(_addresses(dir, node), opts=opts)
    entry = data["entry"]
    if entry is None:
        from .common import EXIT_UNREACHABLE, _fail

        _fail(EXIT_UNREACHABLE, "no node answered: " + ("; ".join(f"{a}: {e}" for a, e in data["errors"].items())
                                                        or "no address"))
    reply = data["views"][entry]
    n = reply.stats.get("n_configured", 3)
    ring = Ring(reply.ring, n, reply.stats.get("vnodes", 256))
    own = ownership(ring)
    if output == "json":
        doc = {"seen_by": entry, "n": ring.n, "vnodes": ring.vnodes, "nodes": own}
        if tokens:
            doc["arcs"] = [{"start": s, "end": e, "replicas": list(p)} for s, e, p in arcs(ring)]
        print(json.dumps(doc))
        return
    cells = [[node_id, str(o["vnodes"]), f"{o['primary'] * 100:.2f}%", f"{o['effective'] * 100:.2f}%"]
             for node_id, o in sorted(own.items())]
    print(format_table(["node", "tokens", "primary", "owns (effective)"], cells,
                       f"ring as {entry} sees it: {len(ring.nodes)} nodes, N={ring.n}, {ring.vnodes} tokens each"))
    if tokens:
        cells = [[f"{s:#018x}", f"{e:#018x}", f"{((e - s) % TOKEN_SPACE) / TOKEN_SPACE * 100:.3f}%", ", ".join(p)]
                 for s, e, p in arcs(ring)]
        print(format_table(["after", "up to", "share", "replicas"], cells))
