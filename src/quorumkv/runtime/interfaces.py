"""The three edges the one effect executor (``runtime/executor.py``) runs against.

Only these differ between the real node (``shell/``: asyncio sockets, storage
engines with writer threads, the wall clock), the simulator (``sim/``: a virtual
network, in-memory disks with a sync delay, virtual time) and unit tests (FIFO
queues of closures). Everything between an effect and these calls is shared.

Callbacks: ``Done = (ok, result_or_error)``. An edge may call ``done`` before the
method returns (memory storage, a synchronous read) or later (group commit, a
virtual delay) — but a durable operation calls it only once the change would
survive a crash. An edge that loses an operation (a crash) never calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from ..core.version import Record, Version

Done = Callable[[bool, Any], None]
T = TypeVar("T")


class Reader(Protocol):
    """The synchronous reads of one node's local data, run inside ``Storage.query``."""

    def get_now(self, key: bytes) -> Record | None: ...

    def peek_hints(self, key: bytes) -> list[tuple[str, Record]]:
        """Every hint held for ``key``: ``[(owner, record)]``."""
        ...

    def load_hints(self, owner: str, limit: int) -> list[Any]:
        """Oldest first: ``[(hint_id, key, record, created_ms)]``."""
        ...

    def scan_range(self, after: bytes | None, limit: int) -> list[tuple[bytes, Record]]: ...

    def scan_keys(self, after: bytes | None, limit: int) -> list[tuple[bytes, Record]]: ...

    def scan_all(self) -> Iterable[tuple[bytes, Record]]:
        """Every (key, record), tombstones included, lazily (a chunked scan holds it)."""
        ...


class Storage(Protocol):
    """One node's durable state: its records, hints, CASPaxos promises, HLC ceiling
    and node-state file (who it knows, whether it finished bootstrapping)."""

    # -- durable changes: ``done`` only after the change is durable (persist before ack)
    def write(self, key: bytes, record: Record, done: Done) -> None:
        """Newer wins (typed records merge); ``done(True, None | newer stored version)``."""
        ...

    def write_hint(self, owner: str, key: bytes, record: Record, created_ms: int, done: Done) -> None: ...

    def paxos(self, op: str, key: bytes, ballot: Version | None, record: Record | None, done: Done) -> None: ...

    def save_hlc_ceiling(self, ts: int, done: Done) -> None: ...

    def purge(self, key: bytes, version: Version, done: Done) -> None:
        """Delete ``key`` only if it is exactly the tombstone at ``version``; ``done(True, hit)``."""
        ...

    def drop(self, key: bytes, version: Version, done: Done) -> None:
        """Delete ``key`` only if it is exactly at ``version``; ``done(True, hit)``."""
        ...

    def delete_hint(self, hint_id: object) -> None:
        """Nothing waits on it: a hint replayed twice is harmless (newer wins)."""
        ...

    def save_members(self, members: dict[str, Any]) -> None:
        """Replace the saved member table (``SaveMembers``); durable when it returns."""
        ...

    def save_bootstrapped(self, members: dict[str, str]) -> None:
        """Remember that the join/replace finished (``SaveBootstrapped``); durable when it returns."""
        ...

    # -- reads
    def read(self, key: bytes, done: Done) -> None:
        """``done(True, record | None)``."""
        ...

    def query(self, read: Callable[[Reader], T], done: Done) -> None:
        """Run ``read`` against the local data and ``done(True, its result)``;
        ``done(False, "storage error: ...")`` if it raises. May finish at once."""
        ...

    def query_soon(self, read: Callable[[Reader], T], done: Done) -> None:
        """As ``query``, but ``done`` never runs before this returns, and other
        events may run first: a chunked scan of any size then interleaves with
        client traffic instead of recursing through the whole table."""
        ...


class Transport(Protocol):
    """One node's network edge. A send that fails (unreachable, queue full) comes
    back later as ``Executor.send_failed``; a broken link as ``Executor.peer_lost``."""

    def send(self, peer: str, msg: object) -> None: ...

    def respond(self, conn: object, msg: object) -> None:
        """Answer a request on the connection it came in on (``conn``: whatever the
        edge passed to ``Executor.request``)."""
        ...


class Clock(Protocol):
    """The node's two clocks, in ms. ``now_ms``: monotonic — every event's time,
    so deadlines, timers and the failure detector never jump with the wall clock
    (the real node: ``time.monotonic``; the simulator and ``CoreMesh``: virtual
    time from a base far from the wall clock's). ``wall_ms``: the wall clock — the
    HLC, TTLs, GC grace, clock offsets (the real node: ``time.time`` plus the
    configured test offset; the simulator: virtual time plus the node's skew). The
    executor hands the core the wall clock before every tick and request it feeds
    (``Executor.now``, ``NodeCore.observe_wall_clock``)."""

    def now_ms(self) -> int: ...

    def wall_ms(self) -> int: ...


__all__ = ["Clock", "Done", "Reader", "Storage", "Transport"]

