"""The simulated network: per-message one-way delays, loss, duplication,
reordering and partitions. It decides *whether and when* a message arrives; the
cluster (``cluster.py``) does the delivering.

Delays follow a PBS/WARS latency profile (``quorumkv.analysis.pbs``) by message
kind, so a simulated cluster and the WARS Monte Carlo share one latency model:

==============  ====  ==========================================================
message         WARS  meaning
==============  ====  ==========================================================
``RepWrite``    W     write request, coordinator -> replica
``RepWriteAck`` A     its acknowledgement, replica -> coordinator
``RepRead``     R     read request, coordinator -> replica
``RepReadResp`` S     its response, replica -> coordinator
anything else   R     (gossip, hints... from later issues; client traffic)
==============  ====  ==========================================================

Connection tokens. A request from node ``a`` to node ``b`` arrives at ``b``'s core
as ``on_request(PeerConn(a, b, ...), msg)``; the core answers with
``Respond(conn, reply)`` and the reply travels ``b -> a`` to ``a.on_response(b,
reply)``. The token carries both incarnations: like a TCP connection, it dies when
either end crashes, and whatever was in flight on it is lost.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np

from ..analysis import pbs
from ..core import messages as m

#: Uniforms transformed per refill of a delay buffer (amortises numpy call overhead).
DELAY_BATCH = 4096
#: Extra delay added to a message picked for reordering (µs, uniform 0..this).
REORDER_US_MAX = 50_000


class PeerConn(NamedTuple):
    src: str
    dst: str
    src_incarnation: int
    dst_incarnation: int


class ClientConn(NamedTuple):
    client: int
    node: str
    node_incarnation: int


_KIND_OF_TYPE = {m.RepWrite: 0, m.RepWriteAck: 1, m.RepRead: 2, m.RepReadResp: 3,
                 m.Put: 0, m.Get: 2}


class LatencySampler:
    """One-way delays in µs drawn from a WARS profile, batch by batch.

    The numpy generator is seeded from the simulator's ``random.Random``, so the
    whole run still follows from one seed.
    """

    def __init__(self, profile: pbs.WarsProfile, rng: random.Random) -> None:
        self.profile = profile
        self._np = np.random.default_rng(rng.getrandbits(63))
        self._dists = profile.distributions()
        self._buf: list[list[int]] = [[], [], [], []]

    def delay_us(self, kind: int) -> int:
        buf = self._buf[kind]
        if not buf:
            ms = pbs.sample(self._dists[kind], self._np, DELAY_BATCH)
            # Reversed so pop() hands them out in drawing order.
            buf.extend(np.rint(ms[::-1] * 1000.0).astype(np.int64).tolist())
        return buf.pop()

    def for_message(self, msg) -> int:
        return self.delay_us(_KIND_OF_TYPE.get(type(msg), 2))


class Faults(NamedTuple):
    """Probabilities per message while faults are active (all 0 once healed)."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0


#: What a link rule returns to drop a message (else extra delay in µs, or None).
DROP = -1


class Network:
    def __init__(self, sampler: LatencySampler, rng: random.Random) -> None:
        self.sampler = sampler
        self.rng = rng
        self.faults = Faults()
        #: Scripted scenarios' per-link control: ``rule(src, dst, msg)`` returns
        #: extra delay in µs, ``DROP``, or None (no opinion). Applied in order; the
        #: first that answers decides. Requests and replies both pass through.
        self.rules: list = []
        #: node -> partition side; nodes on different sides cannot talk. Empty: whole.
        self.side: dict[str, int] = {}
        self.stats = {"sent": 0, "lost": 0, "duplicated": 0, "reordered": 0, "partitioned": 0}

    def reachable(self, a: str, b: str) -> bool:
        side = self.side
        return not side or side.get(a, 0) == side.get(b, 0)

    def deliveries(self, src: str, dst: str, msg) -> list[int]:
        """Delays (µs) of the copies of ``msg`` that will arrive (empty: none)."""
        self.stats["sent"] += 1
        if not self.reachable(src, dst):
            self.stats["partitioned"] += 1
            return []
        extra = 0
        for rule in self.rules:
            decided = rule(src, dst, msg)
            if decided is not None:
                if decided == DROP:
                    self.stats["lost"] += 1
                    return []
                extra = decided
                break
        f = self.faults
        rng = self.rng
        if f.loss and rng.random() < f.loss:
            self.stats["lost"] += 1
            return []
        copies = 2 if f.dup and rng.random() < f.dup else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        out = []
        for _ in range(copies):
            delay = self.sampler.for_message(msg)
            if f.reorder and rng.random() < f.reorder:
                self.stats["reordered"] += 1
                delay += rng.randrange(REORDER_US_MAX)
            out.append(delay + extra)
        return out
