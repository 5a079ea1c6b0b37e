"""The ``quorumkv`` Typer app: every command, its options and its help.

``quorumkv.cli.main`` is the entry point: it runs ``get``/``put``/``delete``/
``cluster status``/``--version`` itself when it can (fast start-up, no Typer import)
and hands everything else to ``app`` here. Exit codes: see ``quorumkv.cli``.
"""

from __future__ import annotations

import errno
import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import __version__, errors
from .common import (
    EXIT_INTERNAL,
    EXIT_UNAVAILABLE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    OutputFormat,
    _addresses,
    _cluster,
    _fail,
    _run_client,
    cmd_delete,
    cmd_get,
    cmd_put,
    exit_code_of,
)

app = typer.Typer(help="quorumkv: a leaderless, quorum-replicated key-value store.",
                  no_args_is_help=True, add_completion=False)
cluster_app = typer.Typer(help="Run a local cluster of node processes under one directory.",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

out = Console()


def _version(value: bool) -> None:
    if value:
        print(f"quorumkv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_version,
                                                help="Print the version and exit.")] = False) -> None:
    """quorumkv: a leaderless, quorum-replicated key-value store."""


DirOpt = Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`).")]
NodeOpt = Annotated[Optional[list[str]], typer.Option("--node", help="Node HOST:PORT (repeatable).")]
OutputOpt = Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format: table or json.")]


# ----------------------------------------------------------------- data commands
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also print (on stderr) the R/W the node used.")]
LinOpt = Annotated[bool, typer.Option("--linearizable", help=(
    "Linearizable (ABD read / CASPaxos write on a majority of the key's primaries) instead of R/W."))]


@app.command()
def put(key: str,
        value: Annotated[Optional[str], typer.Argument(
            help="The value; - reads it from standard input (or use --file).", show_default=False)] = None,
        w: Annotated[Optional[str], typer.Option("--w", help="Write level: integer, ONE, QUORUM or ALL.")] = None,
        dir: DirOpt = None, node: NodeOpt = None,
        target_latency_ms: Annotated[Optional[float], typer.Option(
            "--target-latency-ms", help="Instead of --w: the largest W whose predicted p99 write latency is within this.")] = None,
        verbose: VerboseOpt = False,
        file: Annotated[Optional[str], typer.Option("--file", help="Read the value from this file (up to 8 MiB).")] = None,
        linearizable: LinOpt = False,
        ) -> None:
    """Write VALUE under KEY at write level W (or the W a latency target allows)."""
    cmd_put(key, value, w, dir, node, target_latency_ms, verbose, file, linearizable)


@app.command()
def get(key: str, r: Annotated[Optional[str], typer.Option("--r", help="Read level: integer, ONE, QUORUM or ALL.")] = None,
        dir: DirOpt = None, node: NodeOpt = None,
        target_fresh: Annotated[Optional[float], typer.Option(
            "--target-fresh", help="Instead of --r: the smallest R with P(read sees the last write) >= this.")] = None,
        within_ms: Annotated[Optional[float], typer.Option(
            "--within-ms", help="...for a read this long after the write committed (default 0).")] = None,
        verbose: VerboseOpt = False, linearizable: LinOpt = False) -> None:
    """Print the value of KEY (exit 1 when not found)."""
    cmd_get(key, r, dir, node, target_fresh, within_ms, verbose, linearizable)


@app.command()
def delete(key: str, w: Annotated[Optional[str], typer.Option("--w", help="Write level: integer, ONE, QUORUM or ALL.")] = None,
           dir: DirOpt = None, node: NodeOpt = None, linearizable: LinOpt = False) -> None:
    """Delete KEY (writes a tombstone) at write level W."""
    cmd_delete(key, w, dir, node, linearizable)


@app.command()
def cas(key: str, expected: Annotated[str, typer.Argument(help="The current value required; :absent: = no value.")],
        new: str, dir: DirOpt = None, node: NodeOpt = None) -> None:
    """Set KEY to NEW iff its value is EXPECTED (linearizable); prints 1 (applied) or 0."""
    applied = _run_client(_addresses(dir, node),
                          lambda c: c.cas(key, None if expected == ":absent:" else expected, new))
    print(1 if applied else 0)


@app.command()
def verify(
        workload: Annotated[str, typer.Option("--workload", help="register, cas-register, counter or set.")] = "register",
        faults: Annotated[str, typer.Option("--faults", help="Comma-separated: kill, pause, partition (root; empty: none).")] = "kill,pause",
        linearizable: Annotated[bool, typer.Option("--linearizable/--lww", help=(
            "Clients use linearizable reads/writes (default) or plain LWW quorum ones."))] = True,
        r: Annotated[Optional[str], typer.Option("--r", help="LWW read level (with --lww).")] = None,
        w: Annotated[Optional[str], typer.Option("--w", help="LWW write level (with --lww).")] = None,
        time_s: Annotated[float, typer.Option("--time-s", help="How long the clients run.")] = 10.0,
        concurrency: Annotated[int, typer.Option("--concurrency", help="Concurrent clients.")] = 4,
        keys: Annotated[int, typer.Option("--keys", help="Keys the workload spreads over.")] = 2,
        nodes: Annotated[int, typer.Option("--nodes", help="Nodes of the cluster it starts.")] = 3,
        budget_s: Annotated[float, typer.Option("--budget-s", help="Linearizability search budget (then unknown).")] = 30.0,
        fault_interval_s: Annotated[float, typer.Option("--fault-interval-s", help="Quiet time between faults.")] = 1.0,
        fault_duration_s: Annotated[float, typer.Option("--fault-duration-s", help="How long a fault lasts.")] = 2.5,
        seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the workload and nemesis choices.")] = None,
        history: Annotated[Optional[str], typer.Option("--history", help="Write every operation here (JSON lines).")] = None,
        dir: DirOpt = None,
        output: OutputOpt = OutputFormat.table) -> None:
    """Jepsen-style check: run a workload with faults against a real cluster, then check
    every key's history for linearizability. Exit 0 valid, 1 invalid, 2 unknown."""
    from ..verify.runner import VerifyConfig, format_report
    import os
    import sys

    from ..verify.partition import netns_command
    from ..verify.runner import partitions_need_netns
    from ..verify.runner import run as run_verify

    def level(x):
        return None if x is None else (int(x) if x.isdigit() else x.upper())

    cfg = VerifyConfig(workload=workload, faults=tuple(f for f in faults.split(",") if f.strip()),
                       time_s=time_s, concurrency=concurrency, keys=keys,
                       consistency="linearizable" if linearizable else "lww", r=level(r), w=level(w), nodes=nodes,
                       dir=dir, seed=seed, budget_s=budget_s, fault_interval_s=fault_interval_s,
                       fault_duration_s=fault_duration_s, history_path=history,
                       log=None if output == OutputFormat.json else (lambda line: print(line, flush=True)))
    if linearizable and (r is not None or w is not None):
        _fail(EXIT_USAGE, "--r/--w apply to --lww clients only")
    try:
        if partitions_need_netns(cfg):
            cfg.validate()  # usage errors here, before the re-execution
            # No nft/iptables: the cluster, clients and nemesis run in a private network
            # namespace (unshare execs this same command there, same process id), where
            # ip rules can cut loopback addresses apart; it disappears with them.
            argv = [sys.executable, "-m", "quorumkv", "verify", "--workload", workload, "--faults", faults,
                    "--linearizable" if linearizable else "--lww", "--time-s", repr(time_s),
                    "--concurrency", str(concurrency), "--keys", str(keys), "--nodes", str(nodes),
                    "--budget-s", repr(budget_s), "--fault-interval-s", repr(fault_interval_s),
                    "--fault-duration-s", repr(fault_duration_s), "-o", output.value]
            for flag, value in (("--r", r), ("--w", w), ("--seed", seed), ("--history", history)):
                if value is not None:
                    argv += [flag, str(value)]
            cmd, env = netns_command(argv)
            sys.stdout.flush()
            sys.stderr.flush()
            os.execvpe(cmd[0], cmd, env)
        report = run_verify(cfg)
    except errors.InvalidRequestError as exc:
        _fail(EXIT_USAGE, str(exc))
    if output == OutputFormat.json:
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report))
    raise typer.Exit(report.exit_code)


@app.command()
def incr(key: str, delta: Annotated[int, typer.Argument(help="The amount to add (negative subtracts).")] = 1,
         dir: DirOpt = None, node: NodeOpt = None) -> None:
    """Add DELTA to KEY's integer value atomically (absent: 0); prints the new value."""
    print(_run_client(_addresses(dir, node), lambda c: c.incr(key, delta)))


@app.command()
def inspect(key: str, dir: DirOpt = None, node: NodeOpt = None, output: OutputOpt = OutputFormat.table) -> None:
    """Explain KEY: its replicas (primaries and fallbacks) and the version each holds.

    Read without triggering read repair, so it shows divergence as it is.
    """
    import msgspec

    reply = _run_client(_addresses(dir, node), lambda c: c.inspect(key))
    data = {f: msgspec.to_builtins(getattr(reply, f)) for f in reply.__struct_fields__ if f != "id"}
    data["key"] = key
    if output == "json":
        print(json.dumps(data))
        return
    out.print(f"key {key!r}: preference list {', '.join(reply.preference_list)} "
              f"(asked by {reply.coordinator}); newest {reply.newest or '-'}", markup=False, highlight=False)
    table = Table("node", "role", "state", "answered", "version", "value")
    for rep_ in reply.replicas:
        if rep_.version is None:
            value = "-"
        elif rep_.tombstone:
            value = "tombstone"
        else:
            value = f"{rep_.value_bytes} bytes"
        role = rep_.role + (f" for {rep_.hint_for}" if rep_.hint_for else "")
        stale = reply.newest is not None and rep_.version != reply.newest
        version = (rep_.version or "-") + (" (stale)" if stale else "")
        table.add_row(rep_.node, role, rep_.state, "yes" if rep_.answered else f"no {rep_.error}",
                      version, value)
    out.print(table)


# ------------------------------------------------------------------ ring changes
#: How often progress is polled while a ring change streams.
PROGRESS_POLL_MS = 200
#: Give up watching a ring change after this long (it goes on in the cluster).
RING_CHANGE_WATCH_TIMEOUT_MS = 600_000
#: After a decommission, wait at most this long for every other node to learn (by
#: gossip) that the node left before stopping it.
LEFT_GOSSIP_TIMEOUT_MS = 10_000


def _print_plan(moves, title: str) -> None:
    table = Table("from", "to", "share of key space", title=title)
    for src, dst, share in moves:
        table.add_row(src, dst, f"{share * 100:.2f}%")
    out.print(table)
    total = sum(share for _, _, share in moves)
    out.print(f"{total * 100:.2f}% of the key space gets a new replica (replica copies, N counted once each)")


def _node(cl, node_id: str):
    """The node ``node_id`` of local cluster ``cl``; an unknown id is a usage error."""
    try:
        return cl.node(node_id)
    except KeyError as exc:
        _fail(EXIT_USAGE, str(exc.args[0]))


def _watch_ring_change(address: str, node_id: str, done_state: str, what: str) -> dict:
    """Poll a node's status with a progress bar until it reaches ``done_state``."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn

    from .localcluster import node_status

    deadline = time.monotonic() + RING_CHANGE_WATCH_TIMEOUT_MS / 1000
    stats: dict = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                  console=out, transient=False) as progress:
        task = progress.add_task(what, total=None, detail="")
        while time.monotonic() < deadline:
            st = node_status(address, 2_000)
            if st is not None:
                stats = st.stats
                state = next((mb.state for mb in st.members if mb.node == node_id), "?")
                total = stats.get("stream_sources_total") or None
                progress.update(task, total=total, completed=stats.get("stream_sources_done", 0),
                                detail=f"{state}: scanned {stats.get('stream_keys_scanned', 0)}, "
                                       f"received {stats.get('stream_keys_received', 0)}, "
                                       f"sent {stats.get('stream_keys_sent', 0)}, "
                                       f"pending {stats.get('stream_pending', 0)}, failures {stats.get('stream_failures', 0)}")
                if state == done_state:
                    progress.update(task, completed=total or 1, total=total or 1)
                    return stats
            time.sleep(PROGRESS_POLL_MS / 1000)
    _fail(EXIT_UNAVAILABLE, f"{what}: not {done_state} after {RING_CHANGE_WATCH_TIMEOUT_MS} ms; "
          "it may still complete — watch `quorumkv cluster status`")
    return stats


def _wait_ready(cl, nodes) -> None:
    """Return once ``nodes`` answer and every live node of ``cl`` sees them up with a
    working link (``LocalCluster.wait_converged``); else exit 3 naming who does not
    see whom."""
    try:
        cl.wait_ready(nodes)
        cl.wait_converged(nodes)
    except (RuntimeError, TimeoutError) as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))


def _start_and_watch(cl, info, what: str) -> dict:
    """Start a node that streams data in (join / replace), watch it until it is up,
    then until every live node sees it up."""
    cl.start(info)
    try:
        cl.wait_ready([info])
    except (RuntimeError, TimeoutError) as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    stats = _watch_ring_change(info.address, info.id, "up", what)
    _wait_ready(cl, [info])
    return stats


@app.command()
def join(dir: Annotated[str, typer.Option("--dir", help="Local cluster to add a node to.")],
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would move; change nothing.")] = False,
         port: Annotated[Optional[int], typer.Option("--port")] = None) -> None:
    """Add a node: it joins through gossip, receives its share of the data while the
    cluster keeps serving, then takes ownership. (Elsewhere: `quorumkv serve --seed`.)"""
    from ..core.ringchange import plan_moves

    cl = _cluster(dir)
    view = cl.view()
    if view is None:
        _fail(EXIT_UNREACHABLE, "no node of the cluster answers")
    ring = list(view.ring)
    new_id = f"n{max(int(n.id[1:]) for n in cl.nodes if n.id[1:].isdigit()) + 1}"
    pong = _run_client([cl.nodes[0].address], lambda c: c.ping())
    moves = plan_moves(ring, ring + [new_id], pong.n, 256)
    _print_plan(moves, f"joining {new_id}: data it would receive")
    if dry_run:
        return
    info = cl.add_node(port=port)
    stats = _start_and_watch(cl, info, f"{info.id} joining")
    out.print(f"{info.id} {info.address} is up: received {stats.get('stream_keys_received', 0)} records "
              f"from {stats.get('stream_sources_done', 0)} nodes", markup=False, highlight=False)


@app.command()
def decommission(node_id: str, dir: DirOpt = None, node: NodeOpt = None,
                 dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would move; change nothing.")] = False,
                 force: Annotated[bool, typer.Option("--force", help="Leave even below N live nodes; give up records that keep failing (counted).")] = False) -> None:
    """Stream NODE_ID's data to the nodes that take over its ranges, then remove it
    from the ring. Safe to re-run if interrupted; waits for down new owners unless --force."""
    cl = _cluster(dir) if dir else None
    address = _node(cl, node_id).address if cl else (node[0] if node else None)
    if address is None:
        _fail(EXIT_USAGE, "say where NODE_ID runs: --dir DIR or --node HOST:PORT")
    actual = _run_client([address], lambda c: c.ping()).node
    if actual != node_id:  # the node at ADDRESS is the one that would leave
        _fail(EXIT_USAGE, f"the node at {address} is {actual}, not {node_id}")
    reply = _run_client([address], lambda c: c.decommission(dry_run=True))
    _print_plan(reply.moves, f"decommissioning {node_id}: data that moves")
    if reply.message:
        out.print(reply.message, markup=False, highlight=False)
    if dry_run:
        return
    _run_client([address], lambda c: c.decommission(force=force))
    stats = _watch_ring_change(address, node_id, "left", f"{node_id} leaving")
    undelivered = stats.get("stream_undelivered", 0)
    out.print(f"{node_id} has left: sent {stats.get('stream_keys_sent', 0)} records to new owners"
              + (f"; {undelivered} records UNDELIVERED (forced)" if undelivered else ""), markup=False, highlight=False)
    if cl is not None:
        # Stop it only once the others know it left (gossip), or they keep it in the ring.
        import time

        from .localcluster import node_status

        others = [n.address for n in cl.nodes if n.id != node_id and n.running()]
        deadline = time.monotonic() + LEFT_GOSSIP_TIMEOUT_MS / 1000
        while others and time.monotonic() < deadline:
            views = [node_status(a, 2_000) for a in others]
            if all(v is not None and all(mb.state == "left" for mb in v.members if mb.node == node_id)
                   for v in views):
                break
            time.sleep(PROGRESS_POLL_MS / 1000)
        cl.stop(cl.node(node_id))
        cl.remove_node(node_id)
        out.print(f"stopped {node_id} and removed it from {dir}/cluster.toml")


@app.command()
def replace(dead_node_id: str, dir: Annotated[str, typer.Option("--dir")],
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be streamed; change nothing.")] = False,
            port: Annotated[Optional[int], typer.Option("--port")] = None) -> None:
    """Start a new node in DEAD_NODE_ID's place (same id, so the same ranges); it
    receives the dead node's data from the surviving replicas."""
    from ..core.ring import Ring

    cl = _cluster(dir)
    dead = _node(cl, dead_node_id)
    if dead.running():
        _fail(EXIT_USAGE, f"{dead_node_id} is running (pid {dead.pid()}); replace is for a dead node")
    view = cl.view()
    if view is None:
        _fail(EXIT_UNREACHABLE, "no node of the cluster answers")
    pong = _run_client([n.address for n in cl.nodes if n.id != dead_node_id], lambda c: c.ping())
    ring = Ring(view.ring, pong.n)
    share: dict[str, float] = {}
    tokens = ring.tokens
    prev = tokens[-1] - (1 << 64)
    for tok in tokens:
        plist = ring.preference_list_of_token(tok)
        if dead_node_id in plist:
            src = next((x for x in plist if x != dead_node_id), "-")
            share[src] = share.get(src, 0.0) + (tok - prev) / float(1 << 64)
        prev = tok
    _print_plan(sorted(((s_, dead_node_id, f) for s_, f in share.items()), key=lambda x: -x[2]),
                f"replacing {dead_node_id}: data it would receive")
    if dry_run:
        return
    info = cl.replace_node(dead_node_id, port=port)
    stats = _start_and_watch(cl, info, f"{info.id} replacing")
    out.print(f"{info.id} {info.address} replaced the dead node: received "
              f"{stats.get('stream_keys_received', 0)} records", markup=False, highlight=False)


# ---------------------------------------------------------------------- serving
def _config_level(text: str | None) -> int | str | None:
    """``--r``/``--w`` as the node's config holds them (``r = 2``, ``r = "QUORUM"``), after
    the one level parser (``core.validation.level_to_wire``) accepted the text; the node
    checks it against N at start-up."""
    if text is None:
        return None
    from ..core.validation import level_to_wire

    try:
        level_to_wire(text)
    except errors.InvalidRequestError as exc:
        _fail(EXIT_USAGE, f"bad configuration: {exc}")
    return int(text) if text.strip().isdigit() else text


@app.command()
def serve(
    config: Annotated[Optional[str], typer.Option("--config", help="Node config file (TOML).")] = None,
    node_id: Annotated[Optional[str], typer.Option("--node-id")] = None,
    listen: Annotated[Optional[str], typer.Option("--listen", help="HOST:PORT to listen on.")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir")] = None,
    member: Annotated[Optional[list[str]], typer.Option("--member", help="ID=HOST:PORT of a cluster member (repeatable).")] = None,
    seed: Annotated[Optional[list[str]], typer.Option("--seed", help="HOST:PORT of a member to join through (repeatable).")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="sqlite (default) or memory.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Replicas per key.")] = None,
    r: Annotated[Optional[str], typer.Option("--r", help="Default read level.")] = None,
    w: Annotated[Optional[str], typer.Option("--w", help="Default write level.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate the configuration, print it (TOML) and exit "
                                                        "without serving (deployment manifests are tested so).")] = False,
) -> None:
    """Run one node in the foreground (config file and/or flags; flags win)."""
    from ..shell.config import NodeConfig
    from ..shell.server import serve as run_node

    members = None
    if member:
        members = {}
        for item in member:
            mid, sep, addr = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"--member {item!r}: expected ID=HOST:PORT")
            members[mid] = addr
    overrides = dict(node_id=node_id, listen=listen, data_dir=data_dir, members=members, seeds=seed,
                     storage=storage, n=n, r=_config_level(r), w=_config_level(w))
    try:
        if config:
            cfg = NodeConfig.load(config, **overrides)
        else:
            missing = [f"--{k.replace('_', '-')}" for k in ("node_id", "listen", "data_dir") if overrides[k] is None]
            if missing:
                raise typer.BadParameter(f"without --config, give {', '.join(missing)}")
            cfg = NodeConfig(**{k: v for k, v in overrides.items() if v is not None})
    except (OSError, ValueError) as exc:
        _fail(EXIT_USAGE, f"bad configuration: {exc}")
    if check:
        print(cfg.to_toml(), end="")
        return
    try:
        run_node(cfg)
    except errors.InvalidRequestError as exc:
        _fail(EXIT_USAGE, f"bad configuration: {exc}")
    except OSError as exc:  # port in use, data directory not writable, ...
        where = f" on {cfg.listen}" if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) else ""
        _fail(EXIT_USAGE, f"cannot serve{where}: {exc.strerror or exc}"
              + (f" ({exc.filename})" if exc.filename else ""))


# ---------------------------------------------------------------------- cluster
@cluster_app.command("up")
def cluster_up(
    dir: Annotated[str, typer.Option("--dir", help="Directory for the cluster's nodes.")],
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=64, help="Number of nodes.")] = 5,
    base_port: Annotated[int, typer.Option("--base-port", min=1024, max=65000)] = 7100,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=16, help="N: replicas per key.")] = 3,
    storage: Annotated[str, typer.Option("--storage", help="sqlite (durable default) or memory.")] = "sqlite",
    r: Annotated[str, typer.Option("--r", help="Default read level.")] = "QUORUM",
    w: Annotated[str, typer.Option("--w", help="Default write level.")] = "QUORUM",
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="KEY=VALUE: a node.toml key for every node (repeatable), e.g. --set resp_password=s3cret.")]
    = None,
) -> None:
    """Start NODES node processes in the background under DIR; return once all are ready."""
    from .localcluster import LocalCluster, parse_settings

    if storage not in ("sqlite", "memory"):
        raise typer.BadParameter("--storage must be sqlite or memory")
    try:
        settings = parse_settings(set_ or [])
    except ValueError as exc:
        _fail(EXIT_USAGE, str(exc))
    cl = LocalCluster(dir)
    if not cl.exists:
        try:
            cl.create(nodes, base_port=base_port, replicas=replicas, storage=storage, r=r, w=w,
                      node_overrides={f"n{i + 1}": dict(settings) for i in range(nodes)})
        except (OSError, ValueError) as exc:
            _fail(EXIT_USAGE, f"cannot create a cluster in {dir}: {exc}")
    elif settings:
        try:
            cl.apply_settings(settings)
        except (OSError, ValueError) as exc:
            _fail(EXIT_USAGE, f"cannot apply --set to {dir}: {exc}")
    for node in cl.nodes:
        cl.start(node)
    _wait_ready(cl, cl.nodes)
    for node in cl.nodes:
        out.print(f"{node.id} {node.address} resp={node.resp or '-'} pid={node.pid()}", markup=False, highlight=False)


@cluster_app.command("status")
def cluster_status(dir: DirOpt = None, node: NodeOpt = None, output: OutputOpt = OutputFormat.table) -> None:
    """Every node's view (run it from anywhere with --node): state, load, ownership,
    hints, pending streams, clock offset, and where the views disagree."""
    from .status import cmd_cluster_status

    cmd_cluster_status(dir, node, output.value)


@app.command()
def ring(dir: DirOpt = None, node: NodeOpt = None, output: OutputOpt = OutputFormat.table,
         tokens: Annotated[bool, typer.Option("--tokens", help="Also list every token range and its replicas.")]
         = False) -> None:
    """Token ownership: each node's tokens, primary share and effective share (sums to N)."""
    from .status import cmd_ring

    cmd_ring(dir, node, output.value, tokens)


@cluster_app.command("add")
def cluster_add(dir: Annotated[str, typer.Option("--dir")],
                port: Annotated[Optional[int], typer.Option("--port", help="Port of the new node.")] = None) -> None:
    """Start one more node that joins the cluster through the others (gossip) and
    streams its share of the data; return once every live node sees it up."""
    cl = _cluster(dir)
    info = cl.add_node(port=port)
    _start_and_watch(cl, info, f"{info.id} joining")
    out.print(f"{info.id} {info.address} resp={info.resp} pid={info.pid()} (joined)",
              markup=False, highlight=False)


@cluster_app.command("remove")
def cluster_remove(node_id: str, dir: Annotated[str, typer.Option("--dir")]) -> None:
    """Decommission NODE_ID (stream its data away, leave the ring), stop it, forget it."""
    decommission(node_id, dir=dir, node=None, dry_run=False)


@cluster_app.command("restart")
def cluster_restart(node_id: str, dir: Annotated[str, typer.Option("--dir")]) -> None:
    """Start a stopped or killed node again with the same data."""
    cl = _cluster(dir)
    info = _node(cl, node_id)
    if info.running():
        out.print(f"{node_id} already running (pid {info.pid()})")
        return
    cl.start(info)
    _wait_ready(cl, [info])
    out.print(f"{node_id} {info.address} pid={info.pid()}", markup=False, highlight=False)


#: The signals ``cluster kill --signal`` sends (with or without SIG, any case).
KILL_SIGNALS = ("KILL", "TERM", "STOP", "CONT")


@cluster_app.command("kill")
def cluster_kill(node_id: str, dir: Annotated[str, typer.Option("--dir")],
                 signal_name: Annotated[str, typer.Option("--signal", help="KILL, TERM, STOP or CONT.")] = "KILL") -> None:
    """Send a signal to one node (default SIGKILL) — for failure drills."""
    import signal as sigmod

    name = signal_name.upper().removeprefix("SIG")
    if name not in KILL_SIGNALS:
        raise typer.BadParameter(f"{signal_name!r} is not one of {', '.join(KILL_SIGNALS)}", param_hint="--signal")
    cl = _cluster(dir)
    info = _node(cl, node_id)
    if not cl.signal(info, getattr(sigmod, "SIG" + name)):
        _fail(EXIT_USAGE, f"{node_id} is not running")
    out.print(f"sent SIG{name} to {node_id} (pid {info.pid()})")


@cluster_app.command("down")
def cluster_down(dir: Annotated[str, typer.Option("--dir")]) -> None:
    """Stop every node of the cluster (SIGTERM, then SIGKILL after a grace period)."""
    cl = _cluster(dir)
    stopped = cl.down()
    idle = len(cl.nodes) - stopped
    out.print(f"stopped {stopped} of {len(cl.nodes)} nodes" + (f" ({idle} not running)" if idle else ""),
              markup=False, highlight=False)


# ------------------------------------------------------------------ demo, bench
@app.command()
def demo(base_port: Annotated[int, typer.Option("--base-port")] = 7300,
         keep: Annotated[bool, typer.Option("--keep", help="Leave the cluster directory behind.")] = False) -> None:
    """Start a local 5-node cluster, write/read at QUORUM, lose a node, carry on."""
    from .demo import DemoError, run_demo

    try:
        code = run_demo(out, base_port=base_port, keep=keep)
    except DemoError as exc:
        _fail(exc.code, f"demo failed: {exc}")
    except errors.QuorumKVError as exc:
        _fail(exit_code_of(exc), f"demo failed: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the demo is a first impression: one line, not a traceback
        _fail(EXIT_INTERNAL, f"demo failed unexpectedly: {type(exc).__name__}: {exc} (a bug: please report it)")
    raise typer.Exit(code)


@app.command()
def bench(
    clients: Annotated[int, typer.Option("--clients", min=1, max=1000, help="Concurrent clients.")] = 50,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Duration of each phase.")] = 5.0,
    storage: Annotated[str, typer.Option("--storage", help="memory or sqlite.")] = "memory",
    keys: Annotated[int, typer.Option("--keys", help="Key space size.")] = 10_000,
    value_bytes: Annotated[int, typer.Option("--value-bytes")] = 100,
    base_port: Annotated[int, typer.Option("--base-port")] = 7500,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Put/get throughput and p50/p99 latency: 3-node cluster (N=3, R=W=2) vs one node (N=1)."""
    from .bench import run_bench
    from .localcluster import ports_free

    if storage not in ("memory", "sqlite"):
        raise typer.BadParameter(f"{storage!r} is not one of memory, sqlite", param_hint="--storage")
    # the baseline node takes base_port, base_port+1; the 3-node cluster base_port+10 .. +15
    if not (ports_free(base_port, 2) and ports_free(base_port + 10, 6)):
        _fail(EXIT_USAGE, f"ports {base_port}..{base_port + 1} and {base_port + 10}..{base_port + 15} "
              "are not all free; choose others with --base-port")
    try:
        results = run_bench(clients=clients, seconds=seconds, storage=storage, keys=keys, value_bytes=value_bytes,
                            base_port=base_port, console=None if output == "json" else out)
    except (RuntimeError, TimeoutError) as exc:
        _fail(EXIT_UNAVAILABLE, f"bench: {exc}")
    if output == "json":
        print(json.dumps(results, indent=2))


from .repair import repair_command  # noqa: E402 - registers after the commands above

app.command("repair")(repair_command)

from .cleanup import cleanup_command  # noqa: E402

app.command("cleanup")(cleanup_command)

from .ops import scan_command  # noqa: E402

app.command("scan")(scan_command)
from .snapshot import restore_command, snapshot_command  # noqa: E402

app.command("snapshot")(snapshot_command)
app.command("restore")(restore_command)

from .certs import certs_command  # noqa: E402

app.command("certs")(certs_command)

#: Commands whose modules load numpy and the simulator: registered only when the
#: command line may need them (``quorumkv inspect`` should not pay for numpy).
_HEAVY_COMMANDS = ("math", "sim")
_heavy_registered = False


def register_heavy_commands() -> None:
    """Add ``math`` and ``sim`` to ``app`` (once)."""
    global _heavy_registered
    if _heavy_registered:
        return
    _heavy_registered = True
    from .math import math_app
    from .sim import sim_command

    app.add_typer(math_app, name="math")
    app.command("sim")(sim_command)


def run(argv: list[str]) -> None:
    """Run the Typer app on ``argv``, loading ``math``/``sim`` unless the command
    named is one of the light ones (``--help``, a typo or no command loads all)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    light = {c.name or c.callback.__name__ for c in app.registered_commands} | {"cluster"}
    if first is None or first not in light:
        register_heavy_commands()
    try:
        code = app(args=argv, prog_name="quorumkv", standalone_mode=False)
    except typer.Abort:
        _fail(130, "interrupted")
    except typer.exceptions.TyperException as exc:  # click's usage errors: one line, not a box
        if not argv or exc.__class__.__name__ == "NoArgsIsHelpError":
            print(exc.format_message())  # `quorumkv` / `quorumkv cluster` alone: the help
            raise SystemExit(EXIT_USAGE) from None
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "quorumkv"
        _fail(getattr(exc, "exit_code", EXIT_USAGE), f"{where}: {exc.format_message()}")
    raise SystemExit(code if isinstance(code, int) else 0)
