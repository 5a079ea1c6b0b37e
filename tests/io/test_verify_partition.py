"""``quorumkv verify --faults partition`` on real clusters it starts (root on Linux:
each node on its own loopback address; nftables drop rules between the sides where
nft is installed, else ``ip rule`` blackholes inside a private network namespace made
with ``unshare --net``).

The key tests run twice: ``auto`` (this machine's first choice: nft here, the
namespace on a machine without nft/iptables) and ``netns`` (``QKV_VERIFY_NETNS=1``
forces the namespace path, so what a machine without nft runs is tested everywhere).
The partition is real: while a node is cut off, the client bound to it completes no
linearizable operation (it needs a quorum it cannot reach), yet completes LWW R=W=1
ones (it serves alone — stale reads). Linearizable ``register`` stays valid under
partition + kill; LWW R=W=1 is reported invalid. Every nft table a run creates is
gone afterwards, also after Ctrl-C, and so is every node process of a namespace run.
Without the means (here: none of nft, iptables, unshare/ip on PATH) ``--faults
partition`` is a one-line usage error, exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from quorumkv.errors import InvalidRequestError
from quorumkv.verify import partition
from quorumkv.verify.runner import VerifyConfig

pytestmark = pytest.mark.integration

#: Bound on one verify subprocess (each run below takes 10-25 s on a quiet machine).
RUN_TIMEOUT_S = 55
MEANS = {"auto": {}, "netns": {"QKV_VERIFY_NETNS": "1"}}


def _unavailable(means: str) -> str | None:
    saved = {k: os.environ.get(k) for k in MEANS[means]}
    os.environ.update(MEANS[means])
    try:
        return partition.unavailable()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


@pytest.fixture(params=sorted(MEANS))
def means(request) -> str:
    """The way partitions are made in this test's verify runs (its env is in ``MEANS``)."""
    why = _unavailable(request.param)
    if why is not None:
        pytest.skip(f"partitions unavailable ({request.param}): {why}")
    return request.param


def verify(*args, history=None, means="auto") -> tuple[int, dict, list[dict]]:
    extra = ["--history", str(history)] if history else []
    proc = subprocess.run([sys.executable, "-m", "quorumkv", "verify", "-o", "json", *args, *extra],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env=dict(os.environ, **MEANS[means]))
    assert proc.stdout, proc.stderr
    ops = [json.loads(line) for line in open(history)] if history else []
    return proc.returncode, json.loads(proc.stdout), ops


def windows(report) -> list[tuple[float, float, list[str]]]:
    """(cut at, healed at, minority node ids) for each partition of the run."""
    out, events = [], report["nemesis"]
    for i, e in enumerate(events):
        if e["fault"] == "partition":
            heal = next(h for h in events[i + 1:] if h["fault"] == "heal" and h["node"] == e["node"])
            out.append((e["t_s"], heal["t_s"], e["sides"][0]))
    return out


def inside_ops(report, ops) -> list[dict]:
    """Operations of the clients bound to a cut-off node (client p talks to node
    n{p % nodes + 1}) invoked after the cut and, if they completed, completed before the heal."""
    nodes = report["config"]["nodes"]
    found = []
    for start, end, minority in windows(report):
        for o in ops:
            if f"n{o['process'] % nodes + 1}" in minority and o["invoke_s"] >= start \
                    and (o["complete_s"] is None or o["complete_s"] <= end):
                found.append(o)
    return found


def leftover() -> list[str]:
    return partition.leftover_tables()


def test_linearizable_register_is_valid_under_partition_and_kill(tmp_path, means):
    before = set(leftover())
    # A partition lasts 6 s: longer than the cut-off client's operation in flight at the
    # cut (up to its 3 s time-out) plus one more that fails after the node's 2 s.
    code, report, ops = verify("--workload", "register", "--faults", "partition,kill", "--time-s", "10",
                               "--keys", "2", "--concurrency", "3", "--fault-interval-s", "0.8",
                               "--fault-duration-s", "6", "--seed", "7", history=tmp_path / "h.jsonl", means=means)
    assert report["verdict"] == "valid" and code == 0, report.get("counterexample")
    faults = [e["fault"] for e in report["nemesis"] if e["fault"] != "heal"]
    assert set(faults) == {"partition", "kill"}
    assert report["counts"]["ok"] > 100
    # The partition bites: the cut-off node's client tried, and nothing it tried completed ok.
    cut_off = inside_ops(report, ops)
    assert cut_off, "no operation ran on the minority side during a partition"
    assert [o for o in cut_off if o["type"] == "ok"] == []
    assert set(leftover()) <= before


def test_lww_r1_w1_under_partition_is_invalid_and_the_minority_serves_alone(tmp_path, means):
    code, report, ops = verify("--workload", "register", "--lww", "--r", "1", "--w", "1", "--faults", "partition",
                               "--time-s", "6", "--keys", "1", "--concurrency", "3", "--fault-interval-s", "0.5",
                               "--fault-duration-s", "2", "--seed", "3", history=tmp_path / "h.jsonl", means=means)
    assert report["verdict"] == "invalid" and code == 1
    assert report["counterexample"]["ops"]
    # W=1 / R=1: the cut-off node keeps acknowledging reads and writes on its own.
    served = [o for o in inside_ops(report, ops) if o["type"] == "ok"]
    assert {o["f"] for o in served} == {"read", "write"}


def _netns_pids(pid: int) -> set[int]:
    """Every process in the network namespace of process ``pid`` (empty once it is gone)."""
    try:
        ns = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return set()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ns:
                    found.add(int(entry))
            except OSError:
                pass  # gone meanwhile, or not ours to look at
    return found


def _blackhole_rules(pid: int) -> list[str]:
    """The cut rules in the network namespace of process ``pid``."""
    out = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "rule"], capture_output=True,
                         text=True, timeout=RUN_TIMEOUT_S).stdout
    return [line for line in out.splitlines() if "blackhole" in line]


def test_nothing_is_left_after_a_run_or_after_ctrl_c(means):
    env = dict(os.environ, **MEANS[means])
    how = partition.backend() if means == "auto" else "netns"
    before = set(leftover())
    code, report, _ = verify("--workload", "register", "--faults", "partition", "--time-s", "3",
                             "--concurrency", "2", "--fault-interval-s", "0.3", "--fault-duration-s", "1",
                             "--seed", "1", means=means)
    assert code in (0, 2) and [e for e in report["nemesis"] if e["fault"] == "partition"]
    assert set(leftover()) <= before

    # Ctrl-C in the middle of a partition: the rules and the node processes still go.
    proc = subprocess.Popen([sys.executable, "-m", "quorumkv", "verify", "--faults", "partition",
                             "--time-s", "30", "--fault-interval-s", "0.2", "--fault-duration-s", "20",
                             "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    cut = threading.Event()

    def watch():
        for line in proc.stdout:
            if "nemesis: partition" in line:
                cut.set()

    threading.Thread(target=watch, daemon=True).start()
    inside: set[int] = set()
    try:
        assert cut.wait(RUN_TIMEOUT_S), "no partition was made"
        if how == "netns":  # unshare exec'd verify: same pid, now in a namespace of its own
            assert _blackhole_rules(proc.pid), "no blackhole rule while cut"
            inside = _netns_pids(proc.pid) - {proc.pid}
            assert len(inside) >= 3, inside  # the nodes run in verify's namespace
        else:
            assert [t for t in leftover() if f"_{proc.pid}_" in t]  # the run's table is there while cut
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [t for t in leftover() if f"_{proc.pid}_" in t] == []
    assert [p for p in inside if os.path.exists(f"/proc/{p}")] == []  # every node process is gone


def test_partition_without_the_means_is_a_one_line_usage_error(tmp_path):
    # No nft, iptables, unshare or ip on PATH: exit 2, one line, no traceback.
    env = dict(os.environ, PATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "quorumkv", "verify", "--faults", "partition", "--time-s", "1"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "--faults partition:" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    if sys.platform == "linux" and os.geteuid() == 0:
        assert "nft" in err and "iptables" in err and "unshare" in err


@pytest.mark.skipif(sys.platform != "linux", reason="Linux: the root check comes after the platform one")
def test_partition_as_non_root_is_refused_before_anything_starts(monkeypatch):
    # A non-root user (simulated: the process cannot become nobody and still import its
    # Python here); the CLI turns this InvalidRequestError into the one-line exit 2 above.
    monkeypatch.setattr(partition.os, "geteuid", lambda: 1000)
    with pytest.raises(InvalidRequestError, match=r"^--faults partition: network partitions need root"):
        VerifyConfig(faults=("kill", "partition")).validate()
    VerifyConfig(faults=("kill", "pause")).validate()  # the other faults need nothing


def test_peer_links_connect_from_the_nodes_own_loopback_address_only_when_both_ends_are_loopback():
    from quorumkv.shell.server import _loopback_source

    assert _loopback_source("127.9.8.2:7000", "127.9.8.3") == ("127.9.8.2", 0)
    assert _loopback_source("127.0.0.1:7000", "127.0.0.1") is None  # one address: the kernel's choice
    assert _loopback_source("10.0.0.1:7000", "127.0.0.3") is None
    assert _loopback_source("127.0.0.2:7000", "10.0.0.3") is None
    assert _loopback_source("n1:7000", "n2") is None  # host names are left alone
    assert _loopback_source("[::1]:7000", "127.0.0.3") is None


def test_node_hosts_says_why_a_cluster_cannot_be_partitioned():
    assert partition.node_hosts({"n1": "127.5.5.1:7000", "n2": "127.5.5.2:7000"}) is None
    assert "own address" in partition.node_hosts({"n1": "127.0.0.1:7000", "n2": "127.0.0.1:7001"})
    assert "host names" in partition.node_hosts({"n1": "n1:7000", "n2": "n2:7000"})
    assert "loopback" in partition.node_hosts({"n1": "10.1.1.1:7000", "n2": "10.1.1.2:7000"})


def test_the_local_rule_is_never_moved_outside_verifys_own_namespace(monkeypatch):
    # Here (the test's own namespace) the marker names this very namespace, or is absent:
    # both refuse before running any ip command, so the host's rules stay as they are.
    monkeypatch.setattr(partition, "_run", lambda *a, **k: pytest.fail(f"ran {a}"))
    for marker in (None, str(os.stat("/proc/self/ns/net").st_ino) if sys.platform == "linux" else "1"):
        if marker is None:
            monkeypatch.delenv(partition.NETNS_ENV, raising=False)
        else:
            monkeypatch.setenv(partition.NETNS_ENV, marker)
        assert not partition.in_private_netns()
        with pytest.raises(RuntimeError, match="refusing"):
            partition.prepare_private_netns()
        p = partition.Partitioner({"n1": "127.5.5.1"})
        p.how = "iprule"
        with pytest.raises(RuntimeError, match="own network namespace"):
            p.open()


@pytest.mark.skipif(sys.platform != "linux", reason="the namespace path is Linux-only")
def test_the_namespace_path_needs_the_verify_command_and_its_own_cluster(monkeypatch):
    from quorumkv.verify import runner

    monkeypatch.setattr(partition, "unavailable", lambda: None)
    monkeypatch.setattr(runner, "backend", lambda: "netns")
    monkeypatch.setattr(partition, "backend", lambda: "netns")
    with pytest.raises(InvalidRequestError, match=r"^--faults partition: on an existing cluster \(--dir\)"):
        VerifyConfig(faults=("partition",), dir="/nonexistent").validate()
    cfg = VerifyConfig(faults=("partition",))
    assert runner.partitions_need_netns(cfg)
    with pytest.raises(InvalidRequestError, match="re-executes itself"):
        runner.run(cfg)  # a library caller gets the reason, not a half-made namespace
    assert not runner.partitions_need_netns(VerifyConfig(faults=("kill",)))
