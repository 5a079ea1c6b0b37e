"""``quorumkv demo``: the main job, end to end, in a few seconds."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time

from rich.console import Console

from ..client import Client
from ..core.ring import Ring
from ..errors import UnavailableError
from .localcluster import LocalCluster, ports_free

DEMO_NODES = 5
DEMO_REPLICAS = 3
DEMO_KEYS = 200
#: How long the demo waits for the killed node's process to be gone.
DEAD_TIMEOUT_MS = 5_000

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 5


class DemoError(Exception):
    """The demo could not go on; ``code`` is the CLI exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run_demo(console: Console, *, base_port: int = 7300, keep: bool = False) -> int:
    ports = 2 * DEMO_NODES  # each node listens twice: internode protocol and RESP
    if not ports_free(base_port, ports):
        raise DemoError(f"ports {base_port}..{base_port + ports - 1} are not all free; "
                        "choose others with --base-port", EXIT_USAGE)
    root = tempfile.mkdtemp(prefix="quorumkv-demo-")
    cluster = LocalCluster(root)
    say = console.print
    t0 = time.monotonic()
    ok = False
    try:
        say(f"[bold]1. Starting {DEMO_NODES} node processes[/] (N={DEMO_REPLICAS}, R=W=QUORUM=2, "
            f"durable SQLite storage) in {root}")
        cluster.create(DEMO_NODES, base_port=base_port, replicas=DEMO_REPLICAS, storage="sqlite")
        _ready(cluster, cluster.nodes, start=True)
        for node in cluster.nodes:
            say(f"   {node.id}  {node.address}  pid {node.pid()}")

        with Client(cluster.addresses()) as c:
            say(f"\n[bold]2. Writing {DEMO_KEYS} keys at QUORUM[/] (each to 3 replicas in parallel; "
                "acked once 2 have it on disk)")
            for i in range(DEMO_KEYS):
                c.put(f"user:{i}", f"profile-{i}", w="QUORUM")
            item = c.get_item("user:7", r="QUORUM")
            say(f"   get user:7 at QUORUM -> {item.value.decode()!r}  (version {item.version})")

            ring = Ring([n.id for n in cluster.nodes], DEMO_REPLICAS)
            replicas = ring.preference_list(b"user:7")
            victim = cluster.node(replicas[0])
            with Client([victim.address]) as direct:
                keys_before = direct.ping().keys
            say(f"\n[bold]3. SIGKILL {victim.id}[/], a replica of user:7 (replicas: {', '.join(replicas)})")
            cluster.signal(victim, signal.SIGKILL)
            _wait_dead(victim)

            ok_reads = sum(1 for i in range(DEMO_KEYS) if c.get(f"user:{i}", r="QUORUM") == f"profile-{i}".encode())
            say(f"   reads at QUORUM still succeed: [green]{ok_reads}/{DEMO_KEYS}[/] keys correct")
            for i in range(DEMO_KEYS):
                c.put(f"user:{i}", f"profile-{i}-v2", w="QUORUM")
            say(f"   writes at QUORUM still succeed: [green]{DEMO_KEYS}/{DEMO_KEYS}[/] updated to v2")

            say("\n[bold]4. A write at ALL needs every replica[/] — it fails, clearly and at once:")
            t = time.monotonic()
            try:
                c.put("user:7", "needs-all", w="ALL")
                raise DemoError("unexpected: a write at ALL succeeded with a replica down", EXIT_INTERNAL)
            except UnavailableError as exc:
                say(f"   [yellow]UnavailableError: {exc}[/]  ({(time.monotonic() - t) * 1000:.0f} ms)")

            say(f"\n[bold]5. Restarting {victim.id}[/] with the same data directory")
            cluster.start(victim)
            # Wait until every node sees the new process up with a working link:
            # the reads at ALL below go through a coordinator that must not still
            # believe the victim down.
            _ready(cluster, [victim])
            with Client([victim.address]) as direct:
                pong = direct.ping()
            mark = "green" if pong.keys == keys_before else "red"
            say(f"   {pong.node} is back (pid {victim.pid()}) holding [{mark}]{pong.keys}[/] records on disk "
                f"(it held {keys_before} when it was killed)")
            owned = [i for i in range(DEMO_KEYS) if victim.id in ring.preference_list(f"user:{i}".encode())]
            good = sum(1 for i in owned if i == 7 or c.get(f"user:{i}", r="ALL") == f"profile-{i}-v2".encode())
            say(f"   reads at ALL (every replica answers, {victim.id} included) of the {len(owned)} keys it "
                f"replicates: [green]{good}/{len(owned)}[/] return v2 — the newest version wins over the "
                "v1 the restarted replica still holds")
            item = c.get_item("user:7", r="ALL")
            say(f"   get user:7 at ALL -> {item.value.decode()!r}: the failed ALL write still reached the "
                "2 live replicas. A failed write is not rolled back (as in Cassandra and Riak); the error "
                "only means the requested level was not confirmed.")
        say(f"\n[bold]6. Shutting down[/] — done in {time.monotonic() - t0:.1f} s")
        ok = True
        return 0
    finally:
        cluster.down()
        if keep or not ok:
            # On failure the node logs (DIR/nK/node.log) are what explains it.
            say(f"   cluster directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _ready(cluster: LocalCluster, nodes, start: bool = False) -> None:
    try:
        if start:
            for node in nodes:
                cluster.start(node)
        cluster.wait_ready(nodes)
        cluster.wait_converged(nodes)
    except (RuntimeError, TimeoutError) as exc:
        first_line = str(exc).splitlines()[0]
        raise DemoError(f"{first_line} (node logs under {cluster.root})", EXIT_UNAVAILABLE) from exc


def _wait_dead(node, timeout_ms: int = DEAD_TIMEOUT_MS) -> None:
    deadline = time.monotonic() + timeout_ms / 1000
    while node.running() and time.monotonic() < deadline:
        time.sleep(0.01)
