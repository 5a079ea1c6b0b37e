"""Clock safety for one node: what keeps last-writer-wins honest under clock trouble.

The HLC (``version.HLC``) orders the writes a coordinator has *seen*. Four things
around it, all pure, keep it from losing writes when wall clocks misbehave:

* **Durable ceiling** (the shell persists it; CockroachDB's
  ``persist_upper_bound_interval`` plays the same role). The node never issues a
  timestamp above a ceiling it has persisted, and a restarted node issues none at or
  below the ceiling it finds (its *start floor*), so a restart — even with the wall
  clock stepped back — never issues a timestamp at or below one issued before, and
  never gives two values the same ``(ts, node)``. The ceiling is a lease
  ``HLC_LEASE_MS`` ahead, renewed from ``tick`` once less than half of it is left:
  ``SaveHlcCeiling`` then ``on_store_done`` makes it durable. A write that would need
  a timestamp above the durable ceiling, or one at or below the start floor, waits
  (at most ``HELD_WRITES_MAX`` of them, each until its write timeout) for the next
  save or for the wall clock to pass the floor. Like CockroachDB, a restarted node
  *waits* for its clock rather than jumping its HLC to the floor: a jump would stamp
  its writes up to a lease ahead of real time, and a write another coordinator
  stamps just after (by the real clock) would lose to them. In steady state no
  write waits; after a restart faster than the lease, writes through this node wait
  the rest of it.
* **Clock offsets**: heartbeats carry the sender's wall clock and HLC. The receiver
  keeps the last ``OFFSET_SAMPLES_MAX`` readings of ``their wall - our wall`` per
  peer; a one-way reading is the true offset minus the network delay, so the
  largest recent one is the estimate (error: at most one heartbeat's delay). Shown
  per member in ``status`` and as ``clock_offset_ms_max`` in the statistics.
* **Max-offset rule** (CockroachDB's ``--max-offset``, 500 ms there too): a node
  whose clock is more than ``max_clock_skew_ms`` off from more than half of the
  live peers it has measured refuses to coordinate writes (``UNAVAILABLE``, saying
  why); its timestamps would make later writes from other coordinators lose.
  With one peer a node cannot tell which clock is wrong, and both refuse.
* **Observing peers' HLCs** (heartbeats, gossip, session floors) keeps clocks
  close: a write coordinated after a peer's heartbeat arrived is stamped above
  everything that peer had issued when it sent it. A timestamp further ahead of our
  clock than ``max_clock_skew_ms + HLC_LEASE_MS`` is not a clock within bounds: it
  is ignored (peers) or refused (clients), so one wild clock cannot drag every
  node's HLC into the future.

Session floors (``version.SessionContext``) ride on requests: ``Put.after_ts`` is
observed before the write is stamped; ``Get.floor`` makes the coordinator keep
asking further replicas until one holds that version or a newer one
(``read_floor``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from . import messages as m
from .effects import Log, SaveHlcCeiling
from .quorum import PENDING
from .tokens import StoreKind
from .version import LOGICAL_BITS, Version, newest

if TYPE_CHECKING:
    from .node import NodeCore

#: How far ahead of issued timestamps the persisted ceiling runs. A restart faster
#: than this starts the HLC up to this far ahead of the wall clock (harmless: the
#: HLC only orders writes); a longer lease means fewer saves. 1 s: about two small
#: durable writes a second, and Python nodes take longer than that to restart.
HLC_LEASE_MS = 1_000
#: Renew the ceiling once less than this is left (half the lease: a save has half a
#: second to become durable before any write has to wait for it).
HLC_RENEW_MS = HLC_LEASE_MS // 2
#: A failed save is tried again after this long (not every tick).
HLC_SAVE_RETRY_MS = 100
#: Writes waiting for the ceiling at most; more are refused OVERLOADED (storage is
#: failing or far too slow; holding more only grows memory).
HELD_WRITES_MAX = 10_000
#: Heartbeat readings kept per peer for its offset estimate (five 200 ms beats).
OFFSET_SAMPLES_MAX = 5
#: Default max-offset rule bound (CockroachDB's default max offset: 500 ms).
MAX_CLOCK_SKEW_MS_DEFAULT = 500


def _wall(ts: int) -> int:
    return ts >> LOGICAL_BITS


class HeldWrite(NamedTuple):
    """A client write waiting for the ceiling to be saved."""

    conn: object
    msg: Any  # the client's Put
    deadline_ms: int


class ClockGuard:
    """The clock-safety state of one NodeCore (see the module doc)."""

    def __init__(self, core: NodeCore, hlc_ceiling: int | None, now_ms: int) -> None:
        self.core = core
        self.hlc = core.hlc
        self.node_id = core.node_id
        self.max_skew_ms = core.settings.max_clock_skew_ms
        #: durable ceiling; None: the caller keeps none (tests, tools): no guarantee
        #: across restarts, and no saves
        self.durable = hlc_ceiling
        #: every timestamp issued before the restart is <= this; none issued from now
        #: on may be (writes wait for the wall clock, or a peer's HLC, to pass it)
        self.start_floor = hlc_ceiling or 0
        if hlc_ceiling is not None:
            self.hlc.limit = hlc_ceiling
        self.saving = 0  # ceiling being saved (0: none)
        self._now_seen = core.wall_ms(now_ms)  # the last wall-clock reading (for messages)
        self.retry_at_ms = 0
        self.save_error = ""
        self.held: deque[HeldWrite] = deque()  # oldest first
        self.offsets: dict[str, deque[int]] = {}  # peer -> recent (their wall - our wall) readings
        self.refusal = ""  # non-empty: why this node refuses to coordinate writes
        self.floors: dict[int, Version] = {}  # read op id -> the session's floor for its key
        core.stats.update({"clock_refused_writes": 0, "clock_writes_held": 0, "hlc_ceiling_saves": 0,
                           "hlc_ceiling_save_failures": 0, "hlc_remote_ignored": 0,
                           "session_reads_widened": 0, "session_floor_unmet": 0,
                           "clock_offset_ms_max": 0, "clock_refusing": 0})
        core.handle_stored(StoreKind.CLOCK, self._on_saved)

    # ----------------------------------------------------------- remote clocks
    def _remote_ok(self, ts: int, now_ms: int) -> bool:
        """A timestamp a peer or client may make us adopt: not absurdly ahead."""
        if self.max_skew_ms <= 0:
            return True
        base = max(self.core.wall_ms(now_ms), _wall(self.hlc.last))
        return _wall(ts) <= base + self.max_skew_ms + HLC_LEASE_MS

    def observe_remote(self, ts: int, now_ms: int) -> None:
        if not ts:
            return
        if self._remote_ok(ts, now_ms):
            self.hlc.observe(ts, self.core.wall_ms(now_ms))
        else:
            self.core.stats["hlc_remote_ignored"] += 1

    def on_heartbeat(self, msg: m.Heartbeat, now_ms: int) -> None:
        if msg.wall_ms:
            window = self.offsets.get(msg.node)
            if window is None:
                if msg.node not in self.core.membership.endpoints:
                    return  # not a member (yet): gossip introduces it first
                window = self.offsets[msg.node] = deque(maxlen=OFFSET_SAMPLES_MAX)
            window.append(msg.wall_ms - self.core.wall_ms(now_ms))
            self._judge()
        self.observe_remote(msg.hlc, now_ms)

    def offset_of(self, node: str) -> int | None:
        window = self.offsets.get(node)
        return max(window) if window else None

    def _judge(self) -> None:
        """Apply the max-offset rule to the live peers measured."""
        ms = self.core.membership
        measured = {p: max(w) for p, w in self.offsets.items() if w and ms.is_alive(p) and p in ms.endpoints}
        self.core.stats["clock_offset_ms_max"] = max((abs(o) for o in measured.values()), default=0)
        if self.max_skew_ms <= 0 or not measured:
            self.refusal = ""
            self.core.stats["clock_refusing"] = 0
            return
        far = {p: o for p, o in measured.items() if abs(o) > self.max_skew_ms}
        if 2 * len(far) > len(measured):
            ahead = -sorted(far.values())[len(far) // 2]  # our clock minus the median far peer's
            detail = ", ".join(f"{p} {o:+d} ms" for p, o in sorted(far.items()))
            self.refusal = (f"node {self.node_id} refuses to coordinate writes: its clock is {ahead:+d} ms off "
                            f"from {len(far)} of {len(measured)} peers ({detail}), beyond max_clock_skew_ms="
                            f"{self.max_skew_ms}; its timestamps could make later writes lose. Fix its time "
                            "sync (NTP/chrony) or write through another node")
        else:
            self.refusal = ""
        self.core.stats["clock_refusing"] = int(bool(self.refusal))

    # --------------------------------------------------------- client requests
    def admit(self, conn: object, msg: Any, now_ms: int, out: list[Any]) -> bool:
        """Clock checks before a client Get/Put is coordinated. False: it was
        answered (refused, invalid) or held until the ceiling is saved."""
        core = self.core
        if type(msg) is m.Get:
            floor = msg.floor
            if floor is not None:
                if not self._remote_ok(floor.ts, now_ms):
                    return self._invalid(conn, msg, "floor", floor.ts, now_ms, out)
                self.hlc.observe(floor.ts, self.core.wall_ms(now_ms))
            return True
        if self.refusal:
            core.stats["clock_refused_writes"] += 1
            core.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=self.refusal), now_ms, out)
            return False
        if msg.after_ts:
            if not self._remote_ok(msg.after_ts, now_ms):
                return self._invalid(conn, msg, "after_ts", msg.after_ts, now_ms, out)
            self.hlc.observe(msg.after_ts, self.core.wall_ms(now_ms))
        if self.durable is None or (not self.held and self.may_issue(now_ms)):
            return True
        if len(self.held) >= HELD_WRITES_MAX:
            core.stats["overloaded"] += 1
            core.respond(conn, m.Reply(msg.id, m.OVERLOADED, message=(
                f"node {self.node_id} has HELD_WRITES_MAX={HELD_WRITES_MAX} writes waiting for its clock "
                f"ceiling to be saved{self._why_waiting()}")), now_ms, out)
            return False
        core.stats["clock_writes_held"] += 1
        self.held.append(HeldWrite(conn, msg, now_ms + core.settings.timeout_ms_write))
        self._save_if_needed(now_ms, out)
        return False

    def _invalid(self, conn: object, msg: Any, field: str, ts: int, now_ms: int, out: list[Any]) -> bool:
        self.core.stats["invalid"] += 1
        ahead = _wall(ts) - max(self.core.wall_ms(now_ms), _wall(self.hlc.last))
        self.core.respond(conn, m.Reply(msg.id, m.INVALID, message=(
            f"session {field} {Version(ts, '')} is {ahead} ms ahead of node {self.node_id}'s clock, beyond "
            f"max_clock_skew_ms + HLC_LEASE_MS = {self.max_skew_ms + HLC_LEASE_MS} ms: not a timestamp this "
            "cluster issued (a clock far ahead, or a corrupt session); reset the client's session")),
            now_ms, out)
        return False

    def may_issue(self, now_ms: int) -> bool:
        """With a durable ceiling: a timestamp taken now would be above every one issued
        before the restart and within the saved ceiling. (Else wait: ``save``.)"""
        assert self.durable is not None, "only a durable ceiling limits what may be issued"
        return self.start_floor < self.hlc.peek(self.core.wall_ms(now_ms)) <= self.durable

    def _why_waiting(self) -> str:
        if self.save_error:
            return f" (last save failed: {self.save_error})"
        if self.hlc.peek(self._now_seen) <= self.start_floor:
            return (f" (restarted with its clock {_wall(self.start_floor) - self._now_seen} ms behind the "
                    "timestamps it issued before; it waits for its clock to pass them)")
        return ""

    # --------------------------------------------------------- durable ceiling
    def save(self, now_ms: int, out: list[Any]) -> None:
        """Save a new ceiling a lease ahead (unless a save is out or backing off)."""
        if self.saving or now_ms < self.retry_at_ms:
            return
        target = (max(self.core.wall_ms(now_ms), _wall(self.hlc.last)) + HLC_LEASE_MS) << LOGICAL_BITS
        self.saving = target
        out.append(SaveHlcCeiling((StoreKind.CLOCK, None, 0), target))

    def _on_saved(self, token: object, ok: bool, result: object, now_ms: int, out: list[Any]) -> None:
        target, self.saving = self.saving, 0
        if not ok:
            self.core.stats["hlc_ceiling_save_failures"] += 1
            self.save_error = str(result)
            self.retry_at_ms = now_ms + HLC_SAVE_RETRY_MS
            out.append(Log("error", "hlc_ceiling_save_failed", {"error": self.save_error}))
            return
        self.core.stats["hlc_ceiling_saves"] += 1
        self.save_error = ""
        assert self.durable is not None, "a save is made only for a durable ceiling"
        if target > self.durable:
            self.durable = self.hlc.limit = target
        self._release(now_ms, out)

    def _release(self, now_ms: int, out: list[Any]) -> None:
        core = self.core
        while self.held and self.may_issue(now_ms):
            conn, msg, _deadline = self.held.popleft()
            core.writes.coordinate(conn, msg, now_ms, out)  # only writes are held
        self._save_if_needed(now_ms, out)

    def _save_if_needed(self, now_ms: int, out: list[Any]) -> None:
        if self.held:
            assert self.durable is not None, "writes are held only for a durable ceiling"
            if self.hlc.peek(self.core.wall_ms(now_ms)) > self.durable:
                self.save(now_ms, out)

    def tick(self, now_ms: int, out: list[Any]) -> None:
        wall_ms = self._now_seen = self.core.wall_ms(now_ms)
        self._judge()
        if self.held:
            self._release(now_ms, out)
        if self.durable is not None and _wall(self.durable) - max(wall_ms, _wall(self.hlc.last)) < HLC_RENEW_MS:
            self.save(now_ms, out)
        while self.held and self.held[0][2] <= now_ms:
            conn, msg, _deadline = self.held.popleft()
            self.core.stats["timeouts"] += 1
            self.core.respond(conn, m.Reply(msg.id, m.TIMEOUT, message=(
                f"write waited timeout_ms_write={self.core.settings.timeout_ms_write} for node {self.node_id} "
                f"to save its clock ceiling{self._why_waiting()}")), now_ms, out)
        if self.floors:
            for op_id in [i for i in self.floors if i not in self.core.ops]:
                del self.floors[op_id]

    # ------------------------------------------------------------- read floors
    def note_read(self, op_id: int, floor: Version) -> None:
        self.floors[op_id] = floor

    def read_floor(self, op: Any, now_ms: int, out: list[Any]) -> bool:
        """A read round was won: does its answer honour the session's floor?

        False: yes (or no floor): answer as usual. True: handled here — the round
        was widened to one more replica, or no replica is left to ask and the read
        was answered UNAVAILABLE (never a version older than the session has seen).
        """
        floor = self.floors.get(op.op_id)
        if floor is None:
            return False
        rnd = op.round
        best = newest(rnd.records.values())
        if best is not None and not floor.newer_than(best.version):
            del self.floors[op.op_id]
            return False
        horizon = self.core.settings.tombstone_gc_grace_ms
        if best is None and horizon and floor.wall_ms <= self.core.wall_ms(now_ms) - horizon:
            # No copy anywhere asked, and the floor is older than the GC grace: the
            # key's newest version may be a tombstone GC purged. "Not found" is right.
            del self.floors[op.op_id]
            return False
        core = self.core
        if rnd.outstanding or op.spares:
            core.stats["session_reads_widened"] += 1
            rnd.needed = len(rnd.oks) + 1
            rnd.status = PENDING
            if not rnd.outstanding:
                spare, owner = op.spares.pop(0)
                core.reads.send_read(op, spare, owner, now_ms, out)
            return True
        del self.floors[op.op_id]
        core.stats["session_floor_unmet"] += 1
        found = f"newest found {best.version}" if best is not None else "no replica has a copy"
        op.reply = m.Reply(op.req_id, m.UNAVAILABLE, message=(
            f"read of {len(rnd.oks)} replicas cannot honour the session: {found}, older than the session's "
            f"{floor} (a version it wrote or read); the replicas holding it are down or it sits in a hint. "
            "Retry later, or read without the session"), warning=op.warning)
        op.answered = True
        core.respond(op.conn, op.reply, now_ms, out)
        core.reads.finish(op, now_ms, out)
        return True
