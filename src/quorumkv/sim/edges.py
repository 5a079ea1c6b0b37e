"""The simulator's Storage, Transport and Clock edges (``runtime/interfaces.py``):
one set per node *incarnation*, so whatever a crash interrupted never completes.

* ``SimNodeStorage``: a durable change (write, hint, Paxos step, HLC ceiling,
  purge/drop) lands on the node's ``SimStorage`` ``sync_us`` later and only *then*
  is ``done`` called (persist before ack; ``ack-before-persist`` inverts it for
  writes). A read or query runs ``read_us`` later against the disk as it is then.
  If the node crashed (or was replaced) meanwhile, nothing happens — an unsynced
  write or hint is counted in ``pending_writes_lost`` (never acked: allowed to
  vanish). ``SaveMembers``/``SaveBootstrapped`` update the node's ``Boot`` (what
  ``node-state.json`` holds for the real node) at once.
* ``SimTransport``: ``SimCluster._send`` / ``_respond`` (the virtual network).
* ``SimClock``: the node's monotonic clock (virtual time from its own base) and
  its wall clock (virtual time from ``EPOCH_MS`` plus the node's skew).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import SimCluster


class SimClock:
    __slots__ = ("cluster", "node")

    def __init__(self, cluster: "SimCluster", node: str) -> None:
        self.cluster = cluster
        self.node = node

    def now_ms(self) -> int:
        return self.cluster.clock_ms(self.node)

    def wall_ms(self) -> int:
        return self.cluster.wall_ms(self.node)


class SimTransport:
    __slots__ = ("cluster", "node")

    def __init__(self, cluster: "SimCluster", node: str) -> None:
        self.cluster = cluster
        self.node = node

    def send(self, peer: str, msg) -> None:
        self.cluster._send(self.node, peer, msg)

    def respond(self, conn, msg) -> None:
        self.cluster._respond(self.node, conn, msg)


class SimNodeStorage:
    def __init__(self, cluster: "SimCluster", node: str) -> None:
        self.cluster = cluster
        self.node = node
        self.incarnation = cluster.incarnation[node]
        self.disk = cluster.storage[node]
        self.sync_us = cluster.cfg.sync_us
        self.read_us = cluster.cfg.read_us
        self.lazy = cluster.cfg.bug == "ack-before-persist"

    def _later(self, delay_us: int, apply, done, durable: bool = False) -> None:
        self.cluster.at(delay_us, self._complete, apply, done, durable, inflight=True)

    def _complete(self, apply, done, durable: bool) -> None:
        cluster = self.cluster
        if not cluster._alive(self.node, self.incarnation):  # crashed first: it never happened
            if durable:
                cluster.stats["pending_writes_lost"] += 1
            return
        done(True, apply())

    # -- durable changes
    def write(self, key, record, done) -> None:
        disk = self.disk
        if self.lazy:  # the seeded bug: visible and acked now, durable at the next lazy sync
            disk.write_cached(key, record)
            self._later(0, lambda: disk.newer_than(key, record), done)
        else:  # the result: the newer version that kept the write out, or None
            self._later(self.sync_us, lambda: disk.persist(key, record), done, durable=True)

    def write_hint(self, owner, key, record, created_ms, done) -> None:
        self._later(self.sync_us, lambda: self.disk.store_hint(owner, key, record, created_ms), done, durable=True)

    def paxos(self, op, key, ballot, record, done) -> None:
        # an acceptor step; a crash before the sync: never happened, never answered (promises survive)
        self._later(self.sync_us, lambda: self.disk.paxos(op, key, ballot, record), done)

    def save_hlc_ceiling(self, ts, done) -> None:
        self._later(self.sync_us, lambda: setattr(self.disk, "hlc_ceiling", ts), done)

    def purge(self, key, version, done) -> None:
        self._later(self.sync_us, lambda: self.disk.purge(key, version), done)

    def drop(self, key, version, done) -> None:
        self._later(self.sync_us, lambda: self.disk.drop(key, version), done)

    def delete_hint(self, hint_id) -> None:
        self.disk.delete_hint(hint_id)

    def save_members(self, members) -> None:
        boot = self.cluster.boot
        boot[self.node] = boot[self.node]._replace(known=dict(members))

    def save_bootstrapped(self, members) -> None:
        boot = self.cluster.boot  # a restart comes back as a member, not joining/replacing again
        boot[self.node] = boot[self.node]._replace(members=dict(members), replace=False)

    # -- reads
    def read(self, key, done) -> None:
        self._later(self.read_us, lambda: self.disk.read(key), done)

    def query(self, read, done) -> None:
        self._later(self.read_us, lambda: read(self.disk), done)

    query_soon = query
