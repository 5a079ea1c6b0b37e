"""Hinted handoff: writes kept here for a replica that missed them, and their replay.

A hint is stored when a peer's RepWrite names another owner (a sloppy quorum's
fallback), or when this coordinator's own round leaves a replica without the write
(``Hint`` decisions: known down, failed, silent at the deadline). Per owner the
node counts hints and bytes (``held``: the shell's start-up summary, kept current)
and refuses past ``HintSettings.bytes_max_per_target``. Once the owner is alive
again, hints are loaded in batches (``LoadHints``, rate-limited by a token bucket)
and replayed as RepWrites; each is deleted once acked. A departed (LEFT) owner's
hints go to the key's current replicas instead (``_hand_over``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as m
from .effects import DeleteHint, LoadHints, Log, StoreHint
from .hints import TokenBucket, admit, expired, record_size
from .membership import LEFT, MEMBERS_MAX
from .rounds import Out
from .version import Record

if TYPE_CHECKING:
    from .node import NodeCore

#: Nodes a node keeps hints for at most: one per possible member (a peer naming a
#: node outside the membership is refused anyway; this bounds the table even so).
#: (NodeCore builds its Handoff with node.HINT_TARGETS_MAX, this re-exported.)
HINT_TARGETS_MAX = MEMBERS_MAX


class Handoff:
    def __init__(self, core: NodeCore, held: dict[str, tuple[int, int]] | None, targets_max: int,
                 now_ms: int) -> None:
        self.core = core
        self.settings = core.settings.hints
        self.stats = core.stats
        #: HINT_TARGETS_MAX, as the node was built with it
        self.targets_max = targets_max
        # hints held here, per target: [count, bytes]
        self.held: dict[str, list[int]] = {o: [c, b] for o, (c, b) in (held or {}).items()}
        self.replaying: dict[str, int] = {}  # owner -> replay sends outstanding
        self.unsynced: dict[str, int] = {}  # owner -> StoreHint effects not yet durable
        self.replays: dict[int, tuple[str, Any, int, int]] = {}  # op -> (owner, hint_id, size, deadline)
        # Hints of a departed (LEFT) owner go to the key's current replicas instead:
        # op -> replicas whose ack is still awaited (the hint is deleted once all acked).
        self.handovers: dict[int, set[str]] = {}
        self.bucket = TokenBucket(self.settings.replay_per_s, now_ms)
        core.add_busy_probe(self.busy)
        self.stats.update(dict.fromkeys((
            "hints_stored", "hints_replayed", "hints_handed_over", "hints_dropped_bytes", "hints_dropped_age",
            "hints_refused_target"), 0))

    def busy(self) -> bool:
        """Replays in flight, or hints waiting to be replayed."""
        return bool(self.replays or self.replaying) or any(c > 0 for c, _ in self.held.values())

    # ---------------------------------------------------------------- storing
    def keep(self, owner: str, key: bytes, record: Record, token: tuple[Any, ...], now_ms: int,
             out: Out) -> str:
        """Store a hint for ``owner`` (``token`` on its StoreHint). "" when stored,
        otherwise why not (the bytes bound for that owner is reached)."""
        size = record_size(key, record.value)
        held = self.held.setdefault(owner, [0, 0])
        if not admit(self.settings, held[1], size):
            self.stats["hints_dropped_bytes"] += 1
            out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "bytes", "held_bytes": held[1]}))
            return (f"hints for {owner} are full "
                    f"(bytes_max_per_target={self.settings.bytes_max_per_target})")
        held[0] += 1
        held[1] += size
        self.stats["hints_stored"] += 1
        self.unsynced[owner] = self.unsynced.get(owner, 0) + 1
        out.append(StoreHint(token, owner, key, record, self.core.wall_ms(now_ms)))
        return ""

    def keep_own(self, owner: str, key: bytes, record: Record, now_ms: int, out: Out) -> None:
        """A hint this coordinator keeps for a replica its round did not reach."""
        if owner != self.core.node_id:
            self.keep(owner, key, record, ("h", None, 0, owner), now_ms, out)

    def refused(self, owner: str) -> str:
        """Why a peer's hint for ``owner`` is refused ("" when it is accepted): only
        for a current member, and hint targets are bounded (HINT_TARGETS_MAX)."""
        e = self.core.membership.endpoints.get(owner)
        if e is None or e.status == LEFT:
            return f"hint for {owner!r} refused: not a member of the ring"
        if owner not in self.held and len(self.held) >= self.targets_max:
            return f"hint for {owner!r} refused: HINT_TARGETS_MAX={self.targets_max} targets held"
        return ""

    def stored(self, owner: str, ok: bool, result: Any, out: Out) -> None:
        """A StoreHint effect finished."""
        self.unsynced[owner] -= 1
        assert self.unsynced[owner] >= 0, f"more hints for {owner} stored than asked"
        if not ok:
            out.append(Log("error", "hint_store_failed", {"target": owner, "error": str(result)}))

    # ---------------------------------------------------------------- replay
    def departed(self, owner: str) -> bool:
        e = self.core.membership.endpoints.get(owner)
        return e is not None and e.status == LEFT

    def tick(self, now_ms: int, out: Out) -> None:
        core = self.core
        for owner, (count, _bytes) in self.held.items():
            if count <= 0 or owner in self.replaying or core.ring is None:
                continue
            if core.membership.endpoints.get(owner) is None:
                continue
            # A departed owner's hints are handed to the keys' current replicas (below),
            # at once: it will never come back to take them.
            if not self.departed(owner) and not core.membership.is_alive(owner):
                continue
            got = self.bucket.take(min(count, self.settings.replay_batch_max), now_ms)
            if got:
                self.replaying[owner] = 0
                out.append(LoadHints(owner, got))
        for op_id, (_owner, _hint_id, _size, deadline) in list(self.replays.items()):
            if deadline <= now_ms:
                self._done(op_id, False, now_ms, out)

    def on_hints_loaded(self, owner: str, entries: list[Any], now_ms: int, out: Out) -> None:
        held = self.held.setdefault(owner, [0, 0])
        if not entries:
            if not self.unsynced.get(owner):
                self.held[owner] = [0, 0]  # storage says nothing is left: resync
            self.replaying.pop(owner, None)
            return
        core = self.core
        in_flight = {hint_id for _, hint_id, _, _ in self.replays.values()}
        departed = self.departed(owner)
        wall_ms = core.wall_ms(now_ms)  # a hint's age is its version's: wall time
        for hint_id, key, record, _created_ms in entries:
            if hint_id in in_flight:  # already being replayed: don't send (or count) it twice
                continue
            size = record_size(key, record.value)
            if expired(self.settings, record, wall_ms):
                self.stats["hints_dropped_age"] += 1
                out.append(DeleteHint(hint_id))
                held[0] -= 1
                held[1] -= size
                out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "age",
                                                           "age_ms": wall_ms - record.version.wall_ms}))
                continue
            op_id = core.new_op_id(self)
            self.replays[op_id] = (owner, hint_id, size, now_ms + core.settings.timeout_ms_write)
            if departed:
                self._hand_over(op_id, owner, key, record, now_ms, out)
            else:
                core.deliver(owner, m.RepWrite(op_id, key, record), now_ms, out)
        # In flight now (a hand-over whose replicas are all down finished at once).
        sent = sum(1 for o, *_ in self.replays.values() if o == owner)
        if sent:
            self.replaying[owner] = sent
        else:
            self.replaying.pop(owner, None)

    def _hand_over(self, op_id: int, owner: str, key: bytes, record: Record, now_ms: int, out: Out) -> None:
        """Replay a departed node's hint to the key's current replicas: live ones get it
        now (the hint is deleted once they all acked), a down one gets a hint here."""
        core = self.core
        assert core.ring is not None
        waiting = self.handovers[op_id] = set()
        for node in core.ring.preference_list(key):
            if node == owner:
                continue
            if node == core.node_id or core.membership.is_alive(node):
                waiting.add(node)
                core.deliver(node, m.RepWrite(op_id, key, record), now_ms, out)
            else:
                self.keep_own(node, key, record, now_ms, out)
        if not waiting and op_id in self.replays:
            self._done(op_id, True, now_ms, out)

    def on_reply(self, op_id: int, peer: str, msg: Any, now_ms: int, out: Out) -> None:
        entry = self.replays.get(op_id)
        if entry is None:
            return  # finished already
        waiting = self.handovers.get(op_id)
        if peer not in waiting if waiting is not None else peer != entry[0]:
            return  # an answer from a node this replay did not go to: ignored
        ok = type(msg) is m.RepWriteAck and msg.ok
        if ok and waiting is not None:
            waiting.discard(peer)
            if waiting:
                return  # a departed node's hint: every current replica must ack
        self._done(op_id, ok, now_ms, out)

    def on_send_failed(self, op_id: int, peer: str, msg: Any, reason: str, now_ms: int, out: Out) -> None:
        if op_id in self.replays:
            self._done(op_id, False, now_ms, out)

    def on_peer_lost(self, peer: str, now_ms: int, out: Out) -> None:
        for op_id, (owner, *_rest) in list(self.replays.items()):
            if owner == peer or peer in self.handovers.get(op_id, ()):
                self._done(op_id, False, now_ms, out)

    def _done(self, op_id: int, ok: bool, now_ms: int, out: Out) -> None:
        owner, hint_id, size, _ = self.replays.pop(op_id)
        self.core.owners.pop(op_id, None)
        handed_over = self.handovers.pop(op_id, None) is not None
        if ok:
            self.stats["hints_handed_over" if handed_over else "hints_replayed"] += 1
            held = self.held.setdefault(owner, [0, 0])
            held[0] -= 1
            held[1] -= size
            out.append(DeleteHint(hint_id))
        left = self.replaying.get(owner, 0) - 1
        if left <= 0 or not ok:
            self.replaying.pop(owner, None)  # the next tick loads the next batch
        else:
            self.replaying[owner] = left

