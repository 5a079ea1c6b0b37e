"""Errors by blame (issue 9, item 3): three families under ``QuorumKVError`` — the peer
sent garbage, the node refused, the quorum was not met — with every older class name
kept as a subclass, and the one status -> error table (``core/status.py``) raising into
the right family for the client, the RESP layer and ``QuorumRedis`` alike."""

from __future__ import annotations

import pytest

import quorumkv
from quorumkv import errors as e
from quorumkv.core.status import STATUS_ERRORS, Status, raise_for_status

FAMILY = {
    e.ProtocolError: e.PeerFaultError,
    e.InvalidRequestError: e.RefusedError,
    e.OverloadedError: e.RefusedError,
    e.UnavailableError: e.QuorumNotMetError,
    e.QuorumTimeoutError: e.QuorumNotMetError,
}
FAMILIES = (e.PeerFaultError, e.RefusedError, e.QuorumNotMetError)


@pytest.mark.parametrize("cls,family", FAMILY.items(), ids=lambda x: x.__name__)
def test_each_error_has_exactly_one_family(cls, family):
    assert issubclass(cls, family) and issubclass(cls, e.QuorumKVError)
    assert [f for f in FAMILIES if issubclass(cls, f)] == [family]


def test_old_catch_clauses_still_catch():
    assert issubclass(e.QuorumTimeoutError, e.UnavailableError)
    assert issubclass(e.InvalidRequestError, ValueError)
    assert issubclass(e.NotFoundError, KeyError)
    assert issubclass(e.ConnectionFailedError, ConnectionError)
    for answer_or_transport in (e.NotFoundError, e.ConnectionFailedError):
        assert not any(issubclass(answer_or_transport, f) for f in FAMILIES)


@pytest.mark.parametrize("status,family", [
    (Status.UNAVAILABLE, e.QuorumNotMetError), (Status.TIMEOUT, e.QuorumNotMetError),
    (Status.INVALID, e.RefusedError), (Status.OVERLOADED, e.RefusedError),
])
def test_status_table_raises_into_the_family(status, family):
    assert issubclass(STATUS_ERRORS[status].error, family)
    with pytest.raises(family, match="why"):
        raise_for_status(status, "why")


def test_families_are_exported_from_the_package():
    for name in ("PeerFaultError", "RefusedError", "QuorumNotMetError"):
        assert getattr(quorumkv, name) is getattr(e, name)
        assert name in quorumkv.__all__
