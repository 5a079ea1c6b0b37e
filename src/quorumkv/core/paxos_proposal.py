"""A proposal's state (``core/paxos.py`` runs it): its phases, the moves between
them, and the record of one linearizable operation this node coordinates."""

from __future__ import annotations

from enum import StrEnum

from . import messages_cas as mc
from .casops import OpResult
from .quorum import QuorumRound
from .version import Record, Version

#: Joint-quorum groups of a round during a ring change: (name, members, majority) each.
Groups = tuple[tuple[str, frozenset[str], int], ...]

class Phase(StrEnum):
    IDLE = "idle"  # waiting to start an attempt (first, or a retry after back-off)
    QUEUED = "queued"  # behind this node's other proposal on the key
    READ = "read"  # a linearizable read's round (ABD)
    WRITEBACK = "writeback"  # the read writes the newest record back to a majority
    PREPARE = "prepare"  # phase 1
    ACCEPT = "accept"  # phase 2
    DONE = "done"  # answered


#: Every move a proposal makes (``_Proposal.to`` asserts it); any phase may end (DONE).
PHASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.QUEUED, Phase.READ, Phase.PREPARE, Phase.IDLE, Phase.DONE}),
    Phase.QUEUED: frozenset({Phase.READ, Phase.PREPARE, Phase.IDLE, Phase.DONE}),
    Phase.READ: frozenset({Phase.WRITEBACK, Phase.IDLE, Phase.DONE}),
    Phase.WRITEBACK: frozenset({Phase.IDLE, Phase.DONE}),
    Phase.PREPARE: frozenset({Phase.ACCEPT, Phase.IDLE, Phase.DONE}),
    Phase.ACCEPT: frozenset({Phase.IDLE, Phase.DONE}),
    Phase.DONE: frozenset(),
}

# The members under module names, for the proposer's hot path: ``Phase.READ`` goes
# through the enum metaclass on every read (~0.4 us in CPython 3.11), a global does not.
IDLE, QUEUED, READ, WRITEBACK = Phase.IDLE, Phase.QUEUED, Phase.READ, Phase.WRITEBACK
PREPARE, ACCEPT, DONE = Phase.PREPARE, Phase.ACCEPT, Phase.DONE


class _Proposal:
    """One linearizable operation coordinated here, across its attempts."""

    __slots__ = ("pid", "conn", "msg", "key", "deadline_ms", "phase", "round", "ballot", "attempt",
                 "retry_at_ms", "pending", "result", "cur", "groups", "replicas", "needed", "why")

    def __init__(self, pid: int, conn: object, msg: mc.Atomic, deadline_ms: int) -> None:
        self.pid = pid
        self.conn = conn
        self.msg = msg
        self.key = msg.key
        self.deadline_ms = deadline_ms
        self.phase = IDLE
        self.round: QuorumRound | None = None
        self.ballot: Version | None = None
        self.attempt = 0
        self.retry_at_ms = 0
        #: (ballot, OpResult) of a phase 2 that may have been applied by some acceptor
        self.pending: tuple[Version, OpResult] | None = None
        self.result: OpResult | None = None
        self.cur: Record | None = None
        self.groups: Groups | None = None
        self.replicas: tuple[str, ...] = ()
        self.needed = 0
        self.why = ""  # the last attempt's failure, for the final error message

    def to(self, phase: Phase) -> None:
        assert phase in PHASE_TRANSITIONS[self.phase], f"proposal {self.phase} -> {phase}"
        self.phase = phase
