"""The ``quorumkv`` command line.

Exit codes (the contract scripts rely on): 0 success; 1 key not found; 2 bad usage
or an invalid request (impossible R/W, empty or oversized key/value); 3 the quorum
could not be met (unavailable or timed out); 4 no node could be reached.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import errors
from .client import Client

app = typer.Typer(help="quorumkv: a leaderless, quorum-replicated key-value store.",
                  no_args_is_help=True, add_completion=False)
cluster_app = typer.Typer(help="Run a local cluster of node processes under one directory.",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

out = Console()
err = Console(stderr=True)

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNREACHABLE = 4

DirOpt = Annotated[Optional[str], typer.Option("--dir", help="Cluster directory (from `cluster up`).")]
NodeOpt = Annotated[Optional[list[str]], typer.Option("--node", help="Node HOST:PORT (repeatable).")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output format: table or json.")]


def _fail(code: int, message: str) -> None:
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _cluster(dir_: str):
    from .localcluster import LocalCluster

    cl = LocalCluster(dir_)
    if not cl.exists:
        _fail(EXIT_USAGE, f"no cluster in {dir_} (create one with `quorumkv cluster up --dir {dir_}`)")
    return cl


def _addresses(dir_: str | None, node: list[str] | None) -> list[str]:
    if node:
        return list(node)
    if dir_:
        return _cluster(dir_).addresses()
    env = os.environ.get("QUORUMKV_NODES")
    if env:
        return [a for a in env.split(",") if a]
    _fail(EXIT_USAGE, "say which cluster: --dir DIR or --node HOST:PORT (or set QUORUMKV_NODES)")
    return []


def _level(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _run_client(addresses: list[str], fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", errors.ConsistencyWarning)
        try:
            with Client(addresses) as c:
                result = fn(c)
        except errors.NotFoundError:
            _fail(EXIT_NOT_FOUND, "not found")
        except errors.InvalidRequestError as exc:
            _fail(EXIT_USAGE, f"InvalidRequestError: {exc}")
        except errors.UnavailableError as exc:
            _fail(EXIT_UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        except errors.ConnectionFailedError as exc:
            _fail(EXIT_UNREACHABLE, f"ConnectionFailedError: {exc}")
        except errors.QuorumKVError as exc:
            _fail(EXIT_UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        finally:
            for w in caught:
                if issubclass(w.category, errors.ConsistencyWarning):
                    err.print(f"warning: {w.message}", markup=False, highlight=False, soft_wrap=True)
    return result


# ----------------------------------------------------------------- data commands
@app.command()
def put(key: str, value: str, w: Annotated[Optional[str], typer.Option("--w", help="Write level: integer, ONE, QUORUM or ALL.")] = None,
        dir: DirOpt = None, node: NodeOpt = None) -> None:
    """Write VALUE under KEY at write level W."""
    _run_client(_addresses(dir, node), lambda c: c.put(key, value, w=_level(w)))


@app.command()
def get(key: str, r: Annotated[Optional[str], typer.Option("--r", help="Read level: integer, ONE, QUORUM or ALL.")] = None,
        dir: DirOpt = None, node: NodeOpt = None) -> None:
    """Print the value of KEY (exit 1 when not found)."""
    value = _run_client(_addresses(dir, node), lambda c: c.get(key, r=_level(r)))
    sys.stdout.buffer.write(value + b"\n")
    sys.stdout.flush()


@app.command()
def delete(key: str, w: Annotated[Optional[str], typer.Option("--w", help="Write level: integer, ONE, QUORUM or ALL.")] = None,
           dir: DirOpt = None, node: NodeOpt = None) -> None:
    """Delete KEY (writes a tombstone) at write level W."""
    _run_client(_addresses(dir, node), lambda c: c.delete(key, w=_level(w)))


@app.command()
def inspect(key: str, dir: DirOpt = None, node: NodeOpt = None, output: OutputOpt = "table") -> None:
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


# ---------------------------------------------------------------------- serving
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
) -> None:
    """Run one node in the foreground (config file and/or flags; flags win)."""
    from .shell.config import NodeConfig
    from .shell.server import serve as run_node

    members = None
    if member:
        members = {}
        for item in member:
            mid, sep, addr = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"--member {item!r}: expected ID=HOST:PORT")
            members[mid] = addr
    overrides = dict(node_id=node_id, listen=listen, data_dir=data_dir, members=members, seeds=seed,
                     storage=storage, n=n, r=_level(r), w=_level(w))
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
    try:
        run_node(cfg)
    except errors.InvalidRequestError as exc:
        _fail(EXIT_USAGE, f"bad configuration: {exc}")


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
) -> None:
    """Start NODES node processes in the background under DIR; return once all are ready."""
    from .localcluster import LocalCluster

    if storage not in ("sqlite", "memory"):
        raise typer.BadParameter("--storage must be sqlite or memory")
    cl = LocalCluster(dir)
    if not cl.exists:
        cl.create(nodes, base_port=base_port, replicas=replicas, storage=storage, r=r, w=w)
    try:
        cl.up()
    except (RuntimeError, TimeoutError) as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    for node in cl.nodes:
        out.print(f"{node.id} {node.address} resp={node.resp or '-'} pid={node.pid()}", markup=False, highlight=False)


@cluster_app.command("status")
def cluster_status(dir: Annotated[str, typer.Option("--dir")], output: OutputOpt = "table") -> None:
    """One row per node: id, address, pid, state."""
    rows = _cluster(dir).status()
    if output == "json":
        print(json.dumps(rows))
        return
    seen_by = next((r["seen_by"] for r in rows if r.get("seen_by")), None)
    table = Table("id", "address", "resp", "pid", "state", "phi",
                  title=f"as {seen_by} sees it" if seen_by else "no node answered")
    colors = {"up": "green", "suspect": "yellow", "joining": "cyan", "leaving": "cyan"}
    for row in rows:
        color = colors.get(row["state"], "red")
        phi = "-" if row.get("phi") is None else f"{row['phi']:.1f}"
        table.add_row(row["id"], row["address"], row.get("resp") or "-", str(row["pid"] or "-"),
                      f"[{color}]{row['state']}[/]", phi)
    out.print(table)


@cluster_app.command("add")
def cluster_add(dir: Annotated[str, typer.Option("--dir")],
                port: Annotated[Optional[int], typer.Option("--port", help="Port of the new node.")] = None) -> None:
    """Start one more node that joins the cluster through the others (gossip)."""
    cl = _cluster(dir)
    info = cl.add_node(port=port)
    cl.start(info)
    try:
        cl.wait_ready([info])
    except (RuntimeError, TimeoutError) as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    out.print(f"{info.id} {info.address} resp={info.resp} pid={info.pid()} (joining via gossip)",
              markup=False, highlight=False)


@cluster_app.command("restart")
def cluster_restart(node_id: str, dir: Annotated[str, typer.Option("--dir")]) -> None:
    """Start a stopped or killed node again with the same data."""
    cl = _cluster(dir)
    try:
        info = cl.node(node_id)
    except KeyError as exc:
        _fail(EXIT_USAGE, str(exc.args[0]))
    if info.running():
        out.print(f"{node_id} already running (pid {info.pid()})")
        return
    cl.start(info)
    try:
        cl.wait_ready([info])
    except (RuntimeError, TimeoutError) as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    out.print(f"{node_id} {info.address} pid={info.pid()}", markup=False, highlight=False)


@cluster_app.command("kill")
def cluster_kill(node_id: str, dir: Annotated[str, typer.Option("--dir")],
                 signal_name: Annotated[str, typer.Option("--signal", help="KILL, TERM, STOP or CONT.")] = "KILL") -> None:
    """Send a signal to one node (default SIGKILL) — for failure drills."""
    import signal as sigmod

    cl = _cluster(dir)
    try:
        info = cl.node(node_id)
    except KeyError as exc:
        _fail(EXIT_USAGE, str(exc.args[0]))
    sig = getattr(sigmod, "SIG" + signal_name.upper().removeprefix("SIG"), None)
    if sig is None:
        raise typer.BadParameter(f"unknown signal {signal_name!r}")
    if not cl.signal(info, sig):
        _fail(EXIT_USAGE, f"{node_id} is not running")
    out.print(f"sent SIG{signal_name.upper().removeprefix('SIG')} to {node_id} (pid {info.pid()})")


@cluster_app.command("down")
def cluster_down(dir: Annotated[str, typer.Option("--dir")]) -> None:
    """Stop every node of the cluster (SIGTERM, then SIGKILL after a grace period)."""
    cl = _cluster(dir)
    cl.down()
    out.print(f"stopped {len(cl.nodes)} nodes")


# ------------------------------------------------------------------ demo, bench
@app.command()
def demo(base_port: Annotated[int, typer.Option("--base-port")] = 7300,
         keep: Annotated[bool, typer.Option("--keep", help="Leave the cluster directory behind.")] = False) -> None:
    """Start a local 5-node cluster, write/read at QUORUM, lose a node, carry on."""
    from .demo import run_demo

    raise typer.Exit(run_demo(out, base_port=base_port, keep=keep))


@app.command()
def bench(
    clients: Annotated[int, typer.Option("--clients", min=1, max=1000, help="Concurrent clients.")] = 50,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Duration of each phase.")] = 5.0,
    storage: Annotated[str, typer.Option("--storage", help="memory or sqlite.")] = "memory",
    keys: Annotated[int, typer.Option("--keys", help="Key space size.")] = 10_000,
    value_bytes: Annotated[int, typer.Option("--value-bytes")] = 100,
    base_port: Annotated[int, typer.Option("--base-port")] = 7500,
    output: OutputOpt = "table",
) -> None:
    """Put/get throughput and p50/p99 latency: 3-node cluster (N=3, R=W=2) vs one node (N=1)."""
    from .bench import run_bench

    results = run_bench(clients=clients, seconds=seconds, storage=storage, keys=keys,
                        value_bytes=value_bytes, base_port=base_port, console=None if output == "json" else out)
    if output == "json":
        print(json.dumps(results, indent=2))


from .cli_math import math_app  # noqa: E402 - subcommand apps register after the root app

app.add_typer(math_app, name="math")

from .cli_sim import sim_command  # noqa: E402

app.command("sim")(sim_command)


def main() -> None:
    app()
