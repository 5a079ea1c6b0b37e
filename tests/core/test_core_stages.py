"""The typed vocabulary of the core's extensions (issue 9, item 3): stage enums and
their transition tables, and the storage-token kinds."""

from __future__ import annotations

import pytest

from quorumkv.core import messages_cas as mc
from quorumkv.core.ae_common import AeStep, ae_token
from quorumkv.core.ae_session import SESSION_TRANSITIONS, Session, SessionStage
from quorumkv.core.merkle import MerkleTree
from quorumkv.core.node import NodeCore, NodeSettings
from quorumkv.core.paxos_proposal import PHASE_TRANSITIONS, Phase, _Proposal
from quorumkv.core.rc_common import STAGE_TRANSITIONS, RingChangeStage
from quorumkv.core.tokens import StoreKind

NOW = 1_700_000_000_000


@pytest.mark.parametrize("enum,table", [
    (RingChangeStage, STAGE_TRANSITIONS), (Phase, PHASE_TRANSITIONS), (SessionStage, SESSION_TRANSITIONS),
])
def test_every_stage_has_a_row_and_moves_only_to_stages(enum, table):
    assert set(table) == set(enum)
    for targets in table.values():
        assert targets <= set(enum)
    # every stage but the first is reachable from some other stage
    reachable = set().union(*table.values())
    assert set(enum) - reachable <= {next(iter(enum))}


def test_ring_change_refuses_a_move_its_table_does_not_have():
    core = NodeCore(NodeSettings("n1"), {"n1": "127.0.0.1:7001"}, now_ms=NOW)
    rc = core.ring_change
    assert rc.state == "idle" and rc.status_mode() == "-:idle"  # StrEnum: the strings still compare
    with pytest.raises(AssertionError, match="idle -> done"):
        rc.to(RingChangeStage.DONE)
    rc.to(RingChangeStage.SETTLING)
    assert rc.in_progress() and rc.state in ("settling", "streaming")


def test_a_proposal_refuses_a_move_its_table_does_not_have():
    prop = _Proposal(1, None, mc.Atomic(1, b"k", mc.OP_GET), NOW)
    with pytest.raises(AssertionError, match="idle -> accept"):
        prop.to(Phase.ACCEPT)
    prop.to(Phase.READ)
    prop.to(Phase.DONE)
    with pytest.raises(AssertionError):
        prop.to(Phase.IDLE)  # answered is final


def test_a_session_moves_only_forward():
    s = Session(1, "n2", MerkleTree(4))
    with pytest.raises(AssertionError):
        s.to(SessionStage.REPAIR)
    for stage in (SessionStage.TREE, SessionStage.SCAN2, SessionStage.REPAIR):
        s.to(stage)
    assert s.stage == "repair"


def test_storage_token_kinds_are_the_strings_the_core_routes_by():
    assert len({k.value for k in StoreKind}) == len(StoreKind)
    tok = ae_token(7, AeStep.SCAN1, 7)
    kind, conn, ref = tok[:3]  # what NodeCore.on_store_done reads of every token
    assert (kind, conn, ref) == ("ae", None, 7) and hash(kind) == hash("ae")
