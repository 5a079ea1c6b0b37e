"""Prometheus metrics, /health and /ready of real node processes, scraped and parsed
with prometheus_client.parser; the shipped alert rules and Grafana dashboard name
only metrics a node exposes."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from quorumkv.client import Client
from quorumkv.shell.metrics import readiness
from quorumkv.shell.metrics_hist import Buckets, request_label
from quorumkv.core import messages as m

from helpers import wait_for

redis = pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "quorumkv-dashboard.json"
#: Series Prometheus makes itself for every target (not exposed by a node).
SYNTHETIC = {"up"}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(node) -> dict[str, list]:
    """sample name -> [(labels, value)] of one scrape of ``node``; families with no
    sample yet appear with an empty list (under each name a query may use)."""
    status, text = _get(f"http://{node.metrics}/metrics")
    assert status == 200, text
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        names = {fam.name}
        if fam.type == "counter":
            names.add(fam.name + "_total")
        if fam.type == "histogram":
            names |= {fam.name + s for s in ("_bucket", "_count", "_sum")}
        for name in names:
            out.setdefault(name, [])
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: dict, name: str, **labels) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


# ------------------------------------------------------------------ pure parts
def test_buckets_are_cumulative_with_inf_last():
    b = Buckets((1, 10))
    for v in (0.5, 1, 5, 50):
        b.observe(v)
    assert b.cumulative() == [("1.0", 2), ("10.0", 3), ("+Inf", 4)]
    assert b.sum == 56.5


def test_request_labels():
    assert request_label(m.Get(1, b"k", m.LEVEL_ONE)) == ("get", "ONE")
    assert request_label(m.Get(1, b"k", 2)) == ("get", "2")
    assert request_label(m.Put(1, b"k", None)) == ("delete", "default")
    assert request_label(m.Put(1, b"k", b"v", target_latency_ms=5.0)) == ("put", "target")


@pytest.mark.parametrize("status,ring,serving,why", [
    ("up", ["n1", "n2"], True, ""),
    ("joining", ["n2"], True, "member status is joining"),
    ("up", ["n2"], True, "not in the ring"),
    ("up", ["n1"], False, "not serving yet"),
])
def test_readiness(status, ring, serving, why):
    assert readiness({"node": "n1", "status": status, "ring_nodes": ring, "serving": serving}) == why


# -------------------------------------------------------------- real processes
@pytest.mark.integration
def test_node_metrics_health_ready_and_shipped_rules(make_cluster):
    cluster = make_cluster(3, replicas=3, storage="sqlite")
    n1, _n2, n3 = cluster.nodes
    assert all(n.metrics for n in cluster.nodes)
    puts, gets = 40, 25
    with Client([n1.address]) as c:  # n1 coordinates every request
        for i in range(puts):
            c.put(f"k{i}", b"v")
        for i in range(gets):
            c.get(f"k{i}", r="ALL")
        c.delete("k0")
        assert len(c.keys()) == puts - 1
    r = redis.Redis(port=int(n1.resp.rsplit(":", 1)[1]))
    r.set("viaresp", "1")
    assert r.get("viaresp") == b"1"

    assert _get(f"http://{n1.metrics}/health") == (200, "ok\n")
    assert _get(f"http://{n1.metrics}/ready") == (200, "ready\n")
    s = scrape(n1)
    assert value(s, "quorumkv_client_requests_total") == puts + gets + 1 + 2
    assert value(s, "quorumkv_quorum_rounds_total", outcome="ok") == puts + gets + 1 + 2
    assert value(s, "quorumkv_request_duration_seconds_count", op="put", level="default") == puts + 1
    assert value(s, "quorumkv_request_duration_seconds_count", op="get", level="ALL") == gets
    assert value(s, "quorumkv_request_duration_seconds_count", op="delete") == 1
    assert value(s, "quorumkv_request_duration_seconds_count", op="get", level="default") == 1  # RESP GET
    assert value(s, "quorumkv_request_duration_seconds_bucket", op="get", level="ALL", le="+Inf") == gets
    assert value(s, "quorumkv_storage_keys") == puts + 1  # N=3 on 3 nodes: every node holds every key
    assert value(s, "quorumkv_storage_bytes") > 0
    assert value(s, "quorumkv_storage_commit_batch_size_count") >= 1
    assert value(s, "quorumkv_resp_connections") >= 1
    assert value(s, "quorumkv_resp_commands_total") >= 2
    assert value(s, "quorumkv_scan_pages_total", result="ok") >= 1
    assert {lab["peer"] for lab, v in s["quorumkv_peer_up"] if v == 1} == {"n2", "n3"}
    assert value(s, "quorumkv_ring_members") == 3
    assert abs(value(s, "quorumkv_ring_ownership_ratio") - 3) < 1e-6  # effective shares sum to N
    assert value(s, "quorumkv_ready") == 1
    r.close()

    # The shipped rules and dashboard name only metrics this node exposes.
    exposed = set(s) | SYNTHETIC
    exprs = [rule["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for rule in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) > 20
    names = set()
    for expr in exprs:
        used = set(re.findall(r"\bquorumkv_[a-z0-9_]+", expr)) | ({"up"} & set(re.findall(r"\bup\b", expr)))
        assert used, f"expression names no metric: {expr}"
        names |= used
    assert names - exposed == set(), f"not exposed by a node: {sorted(names - exposed)}"
    alert_names = {rule["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for rule in g["rules"]}
    assert {"QuorumkvNodeDown", "QuorumkvHintsDropped", "QuorumkvQuorumFailures", "QuorumkvClockSkew"} <= alert_names

    # A killed peer: n1's detector, and so its metrics, see it down; writes leave hints for it.
    os.kill(n3.pid(), signal.SIGKILL)
    wait_for(lambda: value(scrape(n1), "quorumkv_peer_up", peer="n3") == 0, 30, "n1 to report n3 down")
    with Client([n1.address]) as c:
        c.put("after-kill", b"v")
    s = scrape(n1)
    assert value(s, "quorumkv_hints_held", target="n3") >= 1
    assert value(s, "quorumkv_hints_stored_total") >= 1
