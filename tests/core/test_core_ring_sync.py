"""RingSync on the pure core: a (re)started node holds strict requests until it has
merged the gossip tables of a majority of the members it knows (docs/ring-changes.md,
"Restarts"); the end-to-end scenario is tests/sim/test_sim_ring_sync.py."""

from __future__ import annotations

from quorumkv.core import messages as m
from quorumkv.core.effects import Respond, Send
from quorumkv.core.membership import UP, Endpoint
from quorumkv.core.node import NodeCore, NodeSettings

NOW = 1_700_000_000_000
FIVE = {f"n{i}": f"10.0.0.{i}:1" for i in range(1, 6)}


class Conn:
    def __repr__(self) -> str:
        return "Conn(client)"


def restarted(members=FIVE, **kw) -> NodeCore:
    """n1 restarting with a saved table (``known``), as the shell and simulator start it."""
    known = {n: (a, NOW - 5_000, 7, UP) for n, a in members.items() if n != "n1"}
    return NodeCore(NodeSettings("n1", vnodes=8, generation=NOW, **kw), dict(members), now_ms=NOW, known=known)


def ack_from(core: NodeCore, peer: str, now: int) -> list:
    table = [Endpoint(n, a, NOW - 5_000, 8, UP) for n, a in FIVE.items() if n != "n1"]
    return core.on_response(peer, m.GossipAck(0, table), now)


def replies(effects) -> list:
    return [e.msg for e in effects if type(e) is Respond and isinstance(e.msg, m.Reply)]


def test_majority_counts_the_node_itself_and_ignores_the_departed() -> None:
    assert restarted().ring_sync.synced is False
    assert NodeCore(NodeSettings("n1", vnodes=8), {"n1": "x:1"}, now_ms=NOW, known={}).ring_sync.synced  # alone
    core = restarted()
    from quorumkv.core.membership import RingSync
    assert RingSync.needed(core.membership) == 2  # 5 members: itself + 2 peers
    assert restarted({k: FIVE[k] for k in ("n1", "n2", "n3")}).ring_sync.needed(
        restarted({k: FIVE[k] for k in ("n1", "n2", "n3")}).membership) == 1


def test_unsynced_node_gossips_to_every_unheard_peer_then_back_to_the_fanout() -> None:
    core = restarted()
    first = {e.peer for e in core.tick(NOW) if type(e) is Send and type(e.msg) is m.Gossip}
    assert first == {"n2", "n3", "n4", "n5"}
    ack_from(core, "n2", NOW + 1)
    assert not core.ring_sync.synced and core.stats["ring_synced"] == 0
    ack_from(core, "n4", NOW + 2)
    assert core.ring_sync.synced and core.stats["ring_synced"] == 1 and core.stats["ring_sync_ms"] == 2
    later = [e.peer for e in core.tick(NOW + 1_000) if type(e) is Send and type(e.msg) is m.Gossip]
    assert len(later) == 2  # GOSSIP_FANOUT again


def test_strict_request_waits_and_is_served_once_a_majority_answered() -> None:
    core = restarted()
    conn = Conn()
    held = core.on_request(conn, m.Get(1, b"k", m.LEVEL_DEFAULT), NOW)  # QUORUM/QUORUM: R + W > N
    assert held == [] and core.stats["ring_sync_waits"] == 1 and core.next_deadline_ms(NOW) == NOW
    ack_from(core, "n3", NOW + 1)
    out = ack_from(core, "n5", NOW + 2)
    assert any(type(e) is Send and type(e.msg) is m.RepRead for e in out) or any(
        type(e).__name__ == "StoreRead" for e in out), out  # coordinated now


def test_weak_request_is_not_held() -> None:
    core = restarted()
    out = core.on_request(Conn(), m.Get(1, b"k", 1), NOW)  # R=1 with W=QUORUM: R + W = N, promises nothing
    assert out and core.stats["ring_sync_waits"] == 0


def test_held_request_is_answered_unavailable_after_the_timeout() -> None:
    core = restarted(timeout_ms_ring_sync=700)
    conn = Conn()
    assert core.on_request(conn, m.Put(1, b"k", b"v", m.LEVEL_DEFAULT), NOW) == []
    assert replies(core.tick(NOW + 699)) == []
    (reply,) = replies(core.tick(NOW + 700))
    assert reply.status == m.UNAVAILABLE and "timeout_ms_ring_sync=700" in reply.message
    assert "0 of the 2 peers" in reply.message and core.stats["ring_sync_refused"] == 1
