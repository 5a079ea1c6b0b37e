"""examples/shopping_cart.py, page_counter.py and session_store.py against a real cluster, a node
SIGKILLed mid-run (issue 15)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import page_counter  # noqa: E402
import session_store  # noqa: E402
import shopping_cart  # noqa: E402


@pytest.mark.parametrize("victim", [0, 2])
def test_shopping_cart_loses_no_acknowledged_add(make_cluster, victim):
    cluster = make_cluster(nodes=3, replicas=3)
    node = cluster.nodes[victim]
    result = shopping_cart.run(cluster.addresses(), kill=lambda: cluster.signal(node, signal.SIGKILL))
    assert not node.running()
    assert result["expected"], "no add was acknowledged at all"
    assert not result["lost"], f"acknowledged adds missing from the cart: {sorted(result['lost'])}"


def test_page_counter_counts_every_acknowledged_view(make_cluster):
    cluster = make_cluster(nodes=3, replicas=3)
    node = cluster.nodes[2]
    result = page_counter.run(cluster.addresses(), kill=lambda: cluster.signal(node, signal.SIGKILL))
    assert result["acked"] > 0
    assert result["acked"] <= result["value"] <= result["acked"] + result["ambiguous"], result


def test_session_store_keeps_sessions_logouts_and_expiry_through_a_kill(make_cluster):
    cluster = make_cluster(nodes=3, replicas=3)
    node = cluster.nodes[1]
    result = session_store.run(cluster.addresses(), kill=lambda: cluster.signal(node, signal.SIGKILL))
    assert not node.running()
    assert result["live"] and result["gone"] and result["short"], "every kind of session was acknowledged"
    assert not result["lost"], f"acknowledged sessions missing: {sorted(result['lost'])}"
    assert not result["resurrected"], f"logged-out sessions back: {sorted(result['resurrected'])}"
    assert not result["not_expired"], f"sessions past their TTL still served: {sorted(result['not_expired'])}"
