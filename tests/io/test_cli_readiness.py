"""Readiness that means ready: `cluster up/restart/add`, `join`, `replace` return
only once every live node sees the nodes concerned up with a working link, and
`repair` never reports success while a node it should repair was down.

The rule itself (``LocalCluster.readiness_problems``) is checked on made-up views;
the commands against real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from quorumkv import Client
from quorumkv.core import messages as m
from quorumkv.core.ring import Ring
from quorumkv.cli.localcluster import LocalCluster, NotReadyError
from quorumkv.cli.testing import free_base_port

from helpers import wait_for


def qkv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# ------------------------------------------------------- the rule, on made-up views
GEN = {"n1": 1_000, "n2": 2_000, "n3": 3_000}


def _views(overrides: dict | None = None, links: dict | None = None, silent: tuple = ()):
    """Each node's (StatusReply, Pong): everyone up, current generations, all links up;
    ``overrides[(seer, seen)] = (state, generation)`` changes one view."""
    overrides = overrides or {}
    out = {}
    for me in GEN:
        members = []
        for other, gen in GEN.items():
            state, g = overrides.get((me, other), ("up", gen))
            members.append(m.MemberView(other, f"addr-{other}", state, "up", g, 1, 9.0 if state != "up" else 0.1))
        status = m.StatusReply(0, me, members, sorted(GEN), {})
        pong = m.Pong(0, me, 3, 2, 2, peers_connected=(links or {}).get(me, len(GEN) - 1))
        out[f"addr-{me}"] = (None, None) if me in silent else (status, pong)
    return out


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    cl = LocalCluster(str(tmp_path))
    cl.create(3, base_port=7000, replicas=3)  # config files only: nothing is started
    for node in cl.nodes:
        node.address = f"addr-{node.id}"
    state = {"views": _views(), "live": list(cl.nodes)}
    monkeypatch.setattr("quorumkv.cli.localcluster.probe", lambda address, timeout_ms: state["views"][address])
    monkeypatch.setattr(cl, "live_nodes", lambda: state["live"])
    return cl, state


def test_readiness_rule_names_who_does_not_see_whom(fake_cluster):
    cl, state = fake_cluster
    n1, n2, n3 = cl.nodes
    assert cl.readiness_problems(cl.nodes) == []
    cl.wait_converged([n3], timeout_ms=0)  # ready: returns at once

    state["views"] = _views({("n1", "n3"): ("down", GEN["n3"]), ("n2", "n3"): ("up", 999)}, links={"n2": 1})
    problems = cl.readiness_problems([n3])
    assert problems == ["n1 sees n3 as down (phi 9.0)",
                        "n2 has not heard from n3's current process yet",  # a view from before a restart
                        "n2 has a working link to 1 of 2 live peers"]
    with pytest.raises(NotReadyError) as exc:
        cl.wait_converged([n3], timeout_ms=0)
    assert str(exc.value).startswith("not ready after 0 ms: n1 sees n3 as down (phi 9.0); ")
    assert "\n" not in str(exc.value)

    # generation 0 is the start-up assumption of a node that never heard of any n3
    state["views"] = _views({("n1", "n3"): ("up", 0)})
    assert cl.readiness_problems([n3]) == []
    # the node concerned must see the others up too
    state["views"] = _views({("n3", "n1"): ("suspect", GEN["n1"])})
    assert cl.readiness_problems([n3]) == ["n3 sees n1 as suspect (phi 9.0)"]
    # a live node that does not answer, and a node concerned that is not running
    state["views"] = _views(silent=("n2",))
    assert cl.readiness_problems([n3]) == ["n2 (addr-n2) does not answer"]
    state["live"] = [n1, n2]
    state["views"] = _views(links={"n1": 1, "n2": 1})
    assert cl.readiness_problems([n3]) == ["n3 is not running"]


# ------------------------------------------------------------- real processes
def _all_read_everywhere(cl: LocalCluster, key: str) -> None:
    """A read at ALL of ``key`` succeeds whichever live node coordinates it."""
    for node in cl.live_nodes():
        with Client([node.address]) as c:
            assert c.get(key, r="ALL") is not None, node.id


@pytest.mark.integration
def test_join_and_replace_return_once_every_node_sees_the_new_node(tmp_path):
    d = str(tmp_path / "c")
    up = qkv("cluster", "up", "--dir", d, "--nodes", "3", "--storage", "memory",
             "--base-port", str(free_base_port(6)))
    assert up.returncode == 0, up.stderr
    try:
        cl = LocalCluster(d)
        assert cl.readiness_problems(cl.nodes) == []
        with Client(cl.addresses()) as c:
            for i in range(50):
                c.put(f"k{i}", f"v{i}", w="ALL")

        join = qkv("join", "--dir", d)
        assert join.returncode == 0, join.stdout + join.stderr
        cl = LocalCluster(d)
        assert [n.id for n in cl.nodes] == ["n1", "n2", "n3", "n4"]
        assert cl.readiness_problems(cl.nodes) == []
        ring = Ring(["n1", "n2", "n3", "n4"], 3)
        key = next(f"k{i}" for i in range(50) if "n4" in ring.preference_list(f"k{i}".encode()))
        _all_read_everywhere(cl, key)

        assert qkv("cluster", "kill", "n4", "--dir", d).returncode == 0
        rep = qkv("replace", "n4", "--dir", d)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        cl = LocalCluster(d)
        assert cl.readiness_problems(cl.nodes) == []
        _all_read_everywhere(cl, key)

        add = qkv("cluster", "add", "--dir", d)
        assert add.returncode == 0, add.stdout + add.stderr
        cl = LocalCluster(d)
        assert len(cl.nodes) == 5 and cl.readiness_problems(cl.nodes) == []
    finally:
        qkv("cluster", "down", "--dir", d)


@pytest.mark.integration
def test_repair_right_after_restart_of_a_wiped_node_and_never_success_with_a_node_down(make_cluster):
    # No periodic anti-entropy and no read repair: only `quorumkv repair` can restore n2.
    cluster = make_cluster(nodes=3, settings={"ae_interval_ms": 0, "read_repair": False})
    keys = [f"w{i}" for i in range(120)]
    with Client(cluster.addresses()) as c:
        for k in keys:
            c.put(k, "v", w="ALL")
    n2 = cluster.node("n2")
    assert cluster.signal(n2, signal.SIGKILL)
    wait_for(lambda: not n2.running(), 10, "n2's process to exit")
    shutil.rmtree(os.path.join(n2.dir, "data"))

    restart = qkv("cluster", "restart", "n2", "--dir", cluster.root)
    assert restart.returncode == 0, restart.stderr
    repair = qkv("repair", "--dir", cluster.root)
    assert repair.returncode == 0, repair.stdout + repair.stderr
    with Client([n2.address]) as c:
        assert c.ping().keys == len(keys)  # restored by the repair itself, not later

    # A node down: repair refuses to start (--dir) or reports the peer it could not
    # sync (--node), exit 3 and one line naming it — never success.
    n3 = cluster.node("n3")
    assert cluster.signal(n3, signal.SIGKILL)
    res = qkv("repair", "--dir", cluster.root)
    assert res.returncode == 3 and "n3 not running" in one_line_error(res)
    res = qkv("repair", "--node", cluster.node("n1").address, "--ready-timeout-ms", "2000")
    assert res.returncode == 3 and "n3" in one_line_error(res)
