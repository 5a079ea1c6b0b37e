"""``quorumkv verify``: a Jepsen-style test against a real local cluster.

Concurrent clients (one thread each, every client bound to one node, as Jepsen binds
a client to a node) run a workload over the native protocol while a nemesis injects
faults into the node processes; every operation is recorded (invoke, then ok / fail
/ info); after the run the faults are healed and each key's history is checked for
linearizability (``checker.py``).

Workloads: ``register`` (reads and writes of unique values), ``cas-register`` (reads,
writes and compare-and-set over a few small values, so CAS often succeeds) and
``counter`` (INCR and reads), ``set`` (adds, each writing its own key; after healing,
every element is read back through every node: no acknowledged add may be lost).
Faults: ``kill`` (SIGKILL, then restart) and ``pause``
(SIGSTOP, then SIGCONT), one node at a time so a majority stays up; ``partition``
(root on Linux: each node gets its own loopback address and nftables — or iptables,
or ``ip rule`` blackholes in a private network namespace — drops the traffic between
a random minority and the rest, ``partition.py``), then heal.
Faults take turns, one at a time.

Outcomes: ``ok`` with its result; ``fail`` only when the operation certainly did not
happen (a read's error, an UNAVAILABLE linearizable change, a refused connection);
``info`` for anything ambiguous (time-outs, a lost connection, a failed plain write —
a failed LWW write is not rolled back and may land later).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

from ..errors import (
    ConnectionFailedError,
    ConsistencyWarning,
    InvalidRequestError,
    OverloadedError,
    QuorumKVError,
    QuorumTimeoutError,
    UnavailableError,
)
from .checker import INVALID, UNKNOWN, VALID, Op, check, overall
from .partition import Partitioner, backend, loopback_hosts, node_hosts, prepare_private_netns

WORKLOADS = ("register", "cas-register", "counter", "set")
#: After healing, how long a ``set`` run lets hints and repair settle before its final reads.
SET_SETTLE_S = 3.0
FAULTS = ("kill", "pause", "partition")
#: A client's own time-out for one request: longer than a node's (2 s) so the node's
#: verdict comes back, short enough that a paused node does not stall the run.
CLIENT_TIMEOUT_MS = 3_000
#: Pause after an operation that failed at once (a killed node refuses connections):
#: keeps a client from spinning and flooding the history with fails.
FAIL_BACKOFF_S = 0.05
#: Operations one client records at most (bounds memory and the checker's work).
OPS_PER_CLIENT_MAX = 20_000
#: Values a cas-register workload writes and expects: few, so CAS often matches.
CAS_VALUES = 5
EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2
#: On an interrupted run, how long the clean-up waits for the nemesis to heal its
#: current fault before it deletes the partition rules anyway.
NEMESIS_JOIN_TIMEOUT_S = 5.0


@dataclass
class VerifyConfig:
    workload: str = "register"
    faults: tuple[str, ...] = ("kill", "pause")
    time_s: float = 10.0
    concurrency: int = 4
    keys: int = 2
    consistency: str = "linearizable"  # or "lww"
    r: int | str | None = None  # lww: the read level (None: the node's)
    w: int | str | None = None
    nodes: int = 3
    dir: str | None = None  # an existing cluster (`quorumkv cluster up --dir`); None: start one
    storage: str = "sqlite"
    seed: int | None = None
    budget_s: float = 30.0  # linearizability search time budget, all keys together
    fault_interval_s: float = 1.0  # quiet time between two faults
    fault_duration_s: float = 2.5  # how long a node stays killed or paused
    log: object = None  # callable(str) for progress lines, or None
    history_path: str | None = None  # write the whole history here (JSON lines)

    def validate(self) -> None:
        if self.workload not in WORKLOADS:
            raise InvalidRequestError(f"workload must be one of {', '.join(WORKLOADS)}, not {self.workload!r}")
        bad = [f for f in self.faults if f not in FAULTS]
        if bad:
            raise InvalidRequestError(f"unknown fault {bad[0]!r}: choose from {', '.join(FAULTS)}")
        if self.consistency not in ("lww", "linearizable"):
            raise InvalidRequestError("consistency must be lww or linearizable")
        if self.time_s <= 0 or self.concurrency < 1 or self.keys < 1 or self.nodes < 1:
            raise InvalidRequestError("time, concurrency, keys and nodes must be positive")
        if "partition" in self.faults:
            if self.nodes < 2 and self.dir is None:
                raise InvalidRequestError("--faults partition needs at least 2 nodes")
            from .partition import unavailable  # noqa: PLC0415

            why = unavailable()
            if why is not None:
                raise InvalidRequestError(f"--faults partition: {why}")
            if self.dir is not None and backend() == "netns":
                raise InvalidRequestError("--faults partition: on an existing cluster (--dir) it needs nft or "
                                          "iptables (a private network namespace cannot reach its nodes)")


@dataclass
class Report:
    verdict: str
    config: dict
    counts: dict
    keys: list = field(default_factory=list)
    counterexample: dict | None = None
    nemesis: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {VALID: EXIT_VALID, INVALID: EXIT_INVALID}.get(self.verdict, EXIT_UNKNOWN)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "config": self.config, "counts": self.counts, "keys": self.keys,
                "counterexample": self.counterexample, "nemesis": self.nemesis}


class _Run:
    def __init__(self, cfg: VerifyConfig, cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.rng = random.Random(cfg.seed)
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.history: list[Op] = []
        self.nemesis: list[dict] = []
        self.counter = 0
        self.partitioner = None  # a Partitioner when the faults include partition

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, line: str) -> None:
        if self.cfg.log:
            self.cfg.log(line)

    # ------------------------------------------------------------ clients
    def client_main(self, process: int, address: str) -> None:
        from ..client import Client  # noqa: PLC0415

        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}-{process}")
        client = Client([address], r=cfg.r, w=cfg.w, timeout_ms=CLIENT_TIMEOUT_MS, session=False,
                        consistency=cfg.consistency)
        recorded = 0
        try:
            while not self.stop.is_set() and recorded < OPS_PER_CLIENT_MAX:
                op = self._next_op(process, rng)
                self._run_op(client, op)
                recorded += 1
                if op.type == "fail":
                    self.stop.wait(FAIL_BACKOFF_S)
        finally:
            client.close()

    def _next_op(self, process: int, rng: random.Random) -> Op:
        key = f"k{rng.randrange(self.cfg.keys)}"
        wl = self.cfg.workload
        roll = rng.random()
        if wl == "set":  # each add writes its own key; the final reads look for them all
            with self.lock:
                self.counter += 1
                element = self.counter
            return Op(process, "add", "set", element, 0.0)
        if wl == "register":
            if roll < 0.5:
                return Op(process, "read", key, None, 0.0)
            with self.lock:
                self.counter += 1
                value = f"{process}-{self.counter}"
            return Op(process, "write", key, value, 0.0)
        if wl == "cas-register":
            if roll < 0.34:
                return Op(process, "read", key, None, 0.0)
            if roll < 0.5:
                return Op(process, "write", key, str(rng.randrange(CAS_VALUES)), 0.0)
            return Op(process, "cas", key, (str(rng.randrange(CAS_VALUES)), str(rng.randrange(CAS_VALUES))), 0.0)
        if roll < 0.25:
            return Op(process, "read", key, None, 0.0)
        return Op(process, "incr", key, 1, 0.0)

    def _run_op(self, client, op: Op) -> None:
        lin = self.cfg.consistency == "linearizable"
        op.invoke_s = self.now()
        try:
            if op.f == "read":
                raw = client.get(op.key, default=None)
                if self.cfg.workload == "counter":
                    op.result = int(raw) if raw is not None else 0
                else:
                    op.result = raw.decode() if raw is not None else None
            elif op.f == "write":
                client.put(op.key, op.value)
            elif op.f == "add":
                client.put(f"set:{op.value}", b"1")
            elif op.f == "cas":
                expected, new = op.value
                op.result = client.cas(op.key, expected, new)
            else:
                op.result = client.incr(op.key, op.value)
            op.type = "ok"
        except (InvalidRequestError, OverloadedError) as exc:
            op.type, op.error = "fail", str(exc)
        except ConnectionFailedError as exc:
            # "no node reachable": never sent. Otherwise it may have run.
            sent = not str(exc).startswith("no node reachable")
            op.type, op.error = ("info" if sent and op.f != "read" else "fail"), str(exc)
        except QuorumTimeoutError as exc:  # a time-out, or "outcome unknown": it may have happened
            op.type, op.error = ("fail" if op.f == "read" else "info"), str(exc)
        except UnavailableError as exc:
            # Linearizable changes answer UNAVAILABLE only when nothing happened; a
            # failed plain write is not rolled back and may land later.
            definite = op.f == "read" or (lin or op.f in ("cas", "incr"))
            op.type, op.error = ("fail" if definite else "info"), str(exc)
        except (QuorumKVError, OSError) as exc:
            op.type, op.error = ("fail" if op.f == "read" else "info"), str(exc)
        op.complete_s = self.now() if op.type != "info" else None
        with self.lock:
            op.index = len(self.history)
            self.history.append(op)

    # ------------------------------------------------------------ nemesis
    def nemesis_main(self) -> None:
        cfg = self.cfg
        if not cfg.faults:
            return
        rng = random.Random(cfg.seed)  # its own stream: the clients' draws race each other
        n = 0
        while not self.stop.wait(cfg.fault_interval_s):
            node = rng.choice(self.cluster.nodes)
            fault = cfg.faults[n % len(cfg.faults)]  # in turn, so a short run sees each
            n += 1
            if fault == "partition":
                self._partition(rng)
                continue
            self.nemesis.append({"t_s": round(self.now(), 3), "fault": fault, "node": node.id})
            self.log(f"{self.now():6.2f}s nemesis: {fault} {node.id}")
            if fault == "kill":
                self.cluster.signal(node, signal.SIGKILL)
                self.stop.wait(cfg.fault_duration_s)
                self._restart(node)
            else:
                self.cluster.signal(node, signal.SIGSTOP)
                self.stop.wait(cfg.fault_duration_s)
                self.cluster.signal(node, signal.SIGCONT)
            self.nemesis.append({"t_s": round(self.now(), 3), "fault": "heal", "node": node.id})

    def _partition(self, rng: random.Random) -> None:
        """Cut a random minority (1 .. (n-1)//2 nodes, at least 1) off from the rest,
        wait ``fault_duration_s``, heal."""
        ids = [nd.id for nd in self.cluster.nodes]
        minority = sorted(rng.sample(ids, rng.randint(1, max(1, (len(ids) - 1) // 2))))
        majority = [i for i in ids if i not in minority]
        label = "+".join(minority)
        self.partitioner.cut([minority, majority])
        # Stamped once the rules are in and before they go: the window is a lower bound.
        self.nemesis.append({"t_s": round(self.now(), 3), "fault": "partition", "node": label,
                             "sides": [minority, majority]})
        self.log(f"{self.now():6.2f}s nemesis: partition {label} | {'+'.join(majority)}")
        self.stop.wait(self.cfg.fault_duration_s)
        self.nemesis.append({"t_s": round(self.now(), 3), "fault": "heal", "node": label})
        self.partitioner.heal()

    def _restart(self, node) -> None:
        for _ in range(100):  # the killed process must be gone before its ports are reused
            if not node.running():
                break
            time.sleep(0.02)
        self.cluster.start(node)
        try:
            self.cluster.wait_ready([node])
        except Exception as exc:  # noqa: BLE001 - reported; the run carries on
            self.log(f"restart of {node.id} not ready: {exc}")

    def heal(self) -> None:
        if self.partitioner is not None:
            self.partitioner.heal()
        for node in self.cluster.nodes:
            self.cluster.signal(node, signal.SIGCONT)
            if not node.running():
                self._restart(node)


def run(cfg: VerifyConfig) -> Report:
    from ..cli.localcluster import LocalCluster  # noqa: PLC0415
    from ..cli.testing import free_base_port  # noqa: PLC0415

    cfg.validate()
    if partitions_need_netns(cfg):
        raise InvalidRequestError("--faults partition: without nft or iptables the run must be in a network "
                                  "namespace of its own; the `quorumkv verify` command re-executes itself there")
    # R + W <= N is what an LWW run may be asked to test: don't warn on every request.
    warnings.filterwarnings("ignore", category=ConsistencyWarning)
    own = cfg.dir is None
    partitions = "partition" in cfg.faults
    cluster = None if own else LocalCluster(cfg.dir)
    if cluster is not None:
        if not cluster.exists:
            raise InvalidRequestError(f"no cluster in {cfg.dir} (create one with `quorumkv cluster up --dir {cfg.dir}`)")
        why = node_hosts({n.id: n.address for n in cluster.nodes}) if partitions else None
        if why is not None:
            raise InvalidRequestError(f"--faults partition: {why}")
    root = tempfile.mkdtemp(prefix="qkv-verify-") if own else cfg.dir
    state = partitioner = nemesis = None
    # SIGTERM runs the clean-up below too (Ctrl-C does: KeyboardInterrupt).
    previous_term = _exit_on_sigterm()
    try:
        if partitions and backend() == "iprule":
            prepare_private_netns()  # lo up, local rule moved: before any node binds
        if own:
            cluster = LocalCluster(os.path.join(root, "cluster"))
            # Partitions tell nodes apart by address: each gets its own loopback one.
            hosts = loopback_hosts(cfg.nodes, random.Random(cfg.seed)) if partitions else None
            cluster.create(cfg.nodes, base_port=free_base_port(2 * cfg.nodes), replicas=min(3, cfg.nodes),
                           storage=cfg.storage, hosts=hosts)
            cluster.up()
        state = _Run(cfg, cluster)
        if partitions:
            partitioner = state.partitioner = Partitioner(
                {n.id: n.address.rsplit(":", 1)[0] for n in cluster.nodes}).open()
        addresses = cluster.addresses()
        threads = [threading.Thread(target=state.client_main, args=(p, addresses[p % len(addresses)]),
                                    name=f"verify-client-{p}", daemon=True) for p in range(cfg.concurrency)]
        nemesis = threading.Thread(target=state.nemesis_main, name="verify-nemesis", daemon=True)
        for t in threads:
            t.start()
        nemesis.start()
        state.stop.wait(cfg.time_s)
        state.stop.set()
        nemesis.join()
        state.heal()
        if partitioner is not None:
            partitioner.close()
        for t in threads:
            t.join(timeout=CLIENT_TIMEOUT_MS / 1000 * 3)
        state.log(f"{state.now():6.2f}s run over: {len(state.history)} operations; checking")
        if cfg.workload == "set":
            time.sleep(SET_SETTLE_S)
            return _set_report(cfg, state, _final_reads(cfg, cluster, state))
        return _report(cfg, state)
    finally:
        # Also on Ctrl-C, SIGTERM or an exception: stop the nemesis, remove every rule it added.
        if state is not None:
            state.stop.set()
        if nemesis is not None and nemesis.is_alive():
            nemesis.join(timeout=NEMESIS_JOIN_TIMEOUT_S)
        if partitioner is not None:
            partitioner.close()
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if own:
            if cluster is not None:
                cluster.down()
            shutil.rmtree(root, ignore_errors=True)


def partitions_need_netns(cfg: VerifyConfig) -> bool:
    """True when this run's partitions need it re-executed under ``unshare --net``."""
    return "partition" in cfg.faults and backend() == "netns"


def _exit_on_sigterm():
    """In the main thread, make SIGTERM raise SystemExit (so ``finally`` clean-ups run);
    returns the handler to restore, or None when not in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def _term(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, _term)


def _final_reads(cfg: VerifyConfig, cluster, state: _Run) -> dict[str, set]:
    """Every element any add may have written, read through every node: node -> the
    elements it returned."""
    from ..client import Client  # noqa: PLC0415

    elements = [o.value for o in state.history if o.f == "add" and o.type in ("ok", "info")]
    found: dict[str, set] = {}
    for node in cluster.nodes:
        seen = found[node.id] = set()
        with Client([node.address], r=cfg.r, timeout_ms=CLIENT_TIMEOUT_MS, session=False,
                    consistency=cfg.consistency) as c:
            for e in elements:
                try:
                    if c.get(f"set:{e}", default=None) is not None:
                        seen.add(e)
                except QuorumKVError:
                    pass  # not seen through this node: counted as missing there
    return found


def _set_report(cfg: VerifyConfig, state: _Run, found: dict[str, set]) -> Report:
    """No lost acknowledged add: every acked element is read back through every node."""
    history = list(state.history)
    acked = {o.value for o in history if o.f == "add" and o.type == "ok"}
    maybe = {o.value for o in history if o.f == "add" and o.type == "info"}
    lost = {node: sorted(acked - seen) for node, seen in found.items() if acked - seen}
    counts = _counts(history)
    counts.update({"acked_adds": len(acked), "unknown_adds": len(maybe),
                   "unknown_adds_present": len(maybe & set().union(*found.values())) if found else 0,
                   "lost_adds": len(set().union(*map(set, lost.values()))) if lost else 0})
    ce = None
    if lost:
        node, missing = next(iter(sorted(lost.items())))
        ops = [o for o in history if o.f == "add" and o.value in set(missing[:5])]
        ce = {"key": f"set (read through {node})", "ops": [o.to_dict() for o in ops]}
    conf = {k: v for k, v in vars(cfg).items() if k not in ("log", "history_path")}
    conf["faults"] = list(cfg.faults)
    verdict = INVALID if lost else VALID
    return Report(verdict, conf, counts, [{"key": "set", "verdict": verdict, "ops": len(history)}], ce,
                  state.nemesis)


def _counts(history: list[Op]) -> dict:
    counts: dict = {"ops": len(history), "ok": 0, "fail": 0, "info": 0, "by_f": {}}
    for o in history:
        counts[o.type] += 1
        per = counts["by_f"].setdefault(o.f, {"ok": 0, "fail": 0, "info": 0})
        per[o.type] += 1
    counts.update(keys_valid=0, keys_invalid=0, keys_unknown=0)
    return counts


def _report(cfg: VerifyConfig, state: _Run) -> Report:
    history = list(state.history)
    if cfg.history_path:
        import json  # noqa: PLC0415

        with open(cfg.history_path, "w") as fh:
            for o in history:
                fh.write(json.dumps(o.to_dict()) + "\n")
    model = cfg.workload
    verdicts = check(history, model, cfg.budget_s)
    counts = _counts(history)
    counts["keys_valid"] = sum(1 for v in verdicts if v.verdict == VALID)
    counts["keys_invalid"] = sum(1 for v in verdicts if v.verdict == INVALID)
    counts["keys_unknown"] = sum(1 for v in verdicts if v.verdict == UNKNOWN)
    ce = None
    bad = next((v for v in verdicts if v.verdict == INVALID), None)
    if bad is not None:
        ce = {"key": bad.key, "ops": [o.to_dict() for o in bad.counterexample]}
    conf = {k: v for k, v in vars(cfg).items() if k not in ("log", "history_path")}
    conf["faults"] = list(cfg.faults)
    return Report(overall(verdicts), conf, counts,
                  [{"key": v.key, "verdict": v.verdict, "ops": v.ops} for v in verdicts], ce, state.nemesis)


def format_report(report: Report) -> str:
    c = report.counts
    cfg = report.config
    lines = [f"workload {cfg['workload']}, consistency {cfg['consistency']}"
             + (f" (r={cfg['r']}, w={cfg['w']})" if cfg["consistency"] == "lww" else "")
             + f", faults {','.join(cfg['faults']) or 'none'}, {cfg['time_s']:g} s, "
             f"{cfg['concurrency']} clients, {cfg['keys']} keys",
             f"operations: {c['ops']} (ok {c['ok']}, fail {c['fail']}, info {c['info']})"]
    for f, per in sorted(c["by_f"].items()):
        lines.append(f"  {f:6} ok {per['ok']:6}  fail {per['fail']:5}  info {per['info']:5}")
    faults = [e for e in report.nemesis if e["fault"] != "heal"]
    lines.append(f"nemesis: {len(faults)} faults" + (": " + ", ".join(f"{e['fault']} {e['node']} @{e['t_s']}s"
                                                                         for e in faults[:8]) if faults else ""))
    if "acked_adds" in c:
        lines.append(f"set: {c['acked_adds']} adds acknowledged, {c['lost_adds']} of them lost; "
                     f"{c['unknown_adds']} of unknown outcome ({c['unknown_adds_present']} present)")
    else:
        lines.append(f"keys: {c['keys_valid']} valid, {c['keys_invalid']} invalid, {c['keys_unknown']} unknown")
    if report.counterexample:
        lines.append(f"counter-example on key {report.counterexample['key']} (the shortest non-linearizable "
                     "prefix: its last operation and the ones concurrent with it):")
        for o in report.counterexample["ops"]:
            end = "..." if o["complete_s"] is None else f"{o['complete_s']:.4f}"
            lines.append(f"  p{o['process']:<3} {o['type']:4} {o['f']:5} value={o['value']!r} "
                         f"result={o['result']!r}  [{o['invoke_s']:.4f} .. {end}]")
    lines.append(f"verdict: {report.verdict.upper()}")
    return "\n".join(lines)
