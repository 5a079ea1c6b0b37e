"""``quorumkv verify``: a Jepsen-style test against a real local cluster.

Concurrent clients (one thread each, every client bound to one node, as Jepsen binds
a client to a node) run a workload over the native protocol while a nemesis injects
faults into the node processes; every operation is recorded (invoke, then ok / fail
/ info); after the run the faults are healed and each key's history is checked for
linearizability (``checker.py``).

Workloads: ``register`` (reads and writes of unique values), ``cas-register`` (reads,
writes and compare-and-set over a few small values, so CAS often succeeds) and
``counter`` (INCR and reads). Faults: ``kill`` (SIGKILL, then restart) and ``pause``
(SIGSTOP, then SIGCONT), one node at a time so a majority stays up. Network
partitions (``ip netns``) are not implemented.

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

WORKLOADS = ("register", "cas-register", "counter")
FAULTS = ("kill", "pause")
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
            raise InvalidRequestError(f"unknown fault {bad[0]!r}: choose from {', '.join(FAULTS)} "
                                      "(network partitions are not implemented)")
        if self.consistency not in ("lww", "linearizable"):
            raise InvalidRequestError("consistency must be lww or linearizable")
        if self.time_s <= 0 or self.concurrency < 1 or self.keys < 1 or self.nodes < 1:
            raise InvalidRequestError("time, concurrency, keys and nodes must be positive")


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
        for node in self.cluster.nodes:
            self.cluster.signal(node, signal.SIGCONT)
            if not node.running():
                self._restart(node)


def run(cfg: VerifyConfig) -> Report:
    from ..localcluster import LocalCluster  # noqa: PLC0415
    from ..testing import free_base_port  # noqa: PLC0415

    cfg.validate()
    # R + W <= N is what an LWW run may be asked to test: don't warn on every request.
    warnings.filterwarnings("ignore", category=ConsistencyWarning)
    own = cfg.dir is None
    root = tempfile.mkdtemp(prefix="qkv-verify-") if own else cfg.dir
    cluster = LocalCluster(os.path.join(root, "cluster") if own else root)
    if own:
        cluster.create(cfg.nodes, base_port=free_base_port(2 * cfg.nodes), replicas=min(3, cfg.nodes),
                       storage=cfg.storage)
        cluster.up()
    elif not cluster.exists:
        raise InvalidRequestError(f"no cluster in {cfg.dir} (create one with `quorumkv cluster up --dir {cfg.dir}`)")
    try:
        state = _Run(cfg, cluster)
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
        for t in threads:
            t.join(timeout=CLIENT_TIMEOUT_MS / 1000 * 3)
        state.log(f"{state.now():6.2f}s run over: {len(state.history)} operations; checking")
        return _report(cfg, state)
    finally:
        if own:
            cluster.down()
            shutil.rmtree(root, ignore_errors=True)


def _report(cfg: VerifyConfig, state: _Run) -> Report:
    history = list(state.history)
    if cfg.history_path:
        import json  # noqa: PLC0415

        with open(cfg.history_path, "w") as fh:
            for o in history:
                fh.write(json.dumps(o.to_dict()) + "\n")
    model = cfg.workload
    verdicts = check(history, model, cfg.budget_s)
    counts: dict = {"ops": len(history), "ok": 0, "fail": 0, "info": 0, "by_f": {}}
    for o in history:
        counts[o.type] += 1
        per = counts["by_f"].setdefault(o.f, {"ok": 0, "fail": 0, "info": 0})
        per[o.type] += 1
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
