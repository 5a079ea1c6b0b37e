"""Cluster-wide key scan (``SCAN``/``KEYS``, ``Client.scan``, ``quorumkv scan``).

Storage keeps each node's records in key order, so the scan walks the key space in
key order and the cursor is simply the last key returned (``after``): it names no
node and no connection, so any node can continue a scan another node started, and a
member that fails between two pages (or during one) costs nothing but its answer.

One page (``Scan``), on the coordinator:

1. ask every live member of the ring (ourselves included) for up to ``count``
   local records after ``after`` — keys, versions, tombstone flags and expiries,
   no values (``ScanPeek`` -> ``ScanKeys`` effect -> ``ScanPeekResp``);
2. wait for all of them, or ``timeout_ms_read``; a member that fails or is silent is
   left out;
3. the members that answered must *cover the ring*: every preference list has at
   least one of them. Otherwise some keys may have no replica among them and the
   page is refused (UNAVAILABLE; the client may retry the same cursor);
4. merge: a member that filled its page (``last`` != b"") has told us everything up
   to ``last`` only, so the page ends at the smallest such ``last`` (the boundary);
   every key up to the boundary was seen by at least one replica of it. Each key's
   newest version across the members decides: tombstones and expired values are
   hidden. Keys appear once (they are strictly increasing across pages).

So a scan is complete under a stable ring (every key that existed throughout the
scan, with a live replica that holds it, is returned exactly once), like a read at
R=1 of every key by every replica that answers — a key whose only copy is on a dead
member, or that was written with W=1 to a replica now down, is missed.

MATCH is applied by each member to the rows it scanned (``count`` counts rows
scanned, not matched: a page may be empty while the cursor moves on, as in Redis).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import messages as m
from .effects import Send
from .messages_scan import Scan, ScanPeek, ScanPeekResp, ScanReply
from .typed import LWW, REDIS_TYPES
from .tokens import StoreKind
from .version import Version

if TYPE_CHECKING:
    from .node import NodeCore

#: Keys a member scans for one page at most (a Redis COUNT above it is clamped): bounds
#: the rows one page reads from storage and holds in memory per member.
SCAN_COUNT_MAX = 10_000
#: Bytes of keys one member puts in one ``ScanPeekResp`` at most (it ends its page
#: early past it): with KEY_BYTES_MAX keys, COUNT rows could exceed a frame.
SCAN_PEEK_BYTES_MAX = 1024 * 1024
#: Bytes of keys in one ``ScanReply`` at most (the page ends early past it): a page
#: merges one from every member, and must fit FRAME_BYTES_MAX with room to spare.
SCAN_REPLY_BYTES_MAX = 4 * 1024 * 1024
#: Pages a coordinator merges at once; past it a Scan is refused OVERLOADED (each
#: holds up to members x count entries until it is answered).
SCANS_INFLIGHT_MAX = 64
#: Longest MATCH pattern accepted (Redis has none; this keeps a hostile pattern's
#: compiled regex small).
SCAN_MATCH_BYTES_MAX = 4 * 1024
#: A page prefers to end at a key no longer than this: the cursor of a RESP SCAN is
#: the key written as a decimal number, and Python's ``int()`` (redis-py parses
#: cursors with it) refuses more than 4,300 digits (~1,780 bytes). Only a page whose
#: keys are all longer ends at a longer one.
CURSOR_KEY_BYTES_PREFERRED_MAX = 1_024
#: Compiled MATCH patterns a node remembers (cleared when full).
PATTERN_CACHE_MAX = 256


class ScanKeys(NamedTuple):
    """Effect: up to ``limit`` local records with key > ``after`` (None: from the
    start), in key order, values left out (a live record's value is b""); report
    ``on_store_done(token, True, [(key, record), ...])``."""

    token: object
    after: bytes | None
    limit: int


def glob_to_regex(pattern: bytes) -> bytes:
    """A Redis glob (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\x``) as a regex
    that must match the whole key. Never fails: a dangling ``[`` or ``\\`` is literal."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        elif c == b"[":
            cls, j = _char_class(pattern, i + 1)
            if cls is None:
                out.append(re.escape(c))  # no closing bracket: a literal "["
            else:
                out.append(cls)
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return b"".join(out)


def _char_class(pattern: bytes, i: int) -> tuple[bytes | None, int]:
    """The regex of a ``[...]`` class whose body starts at ``i``, and the index of
    its ``]``; (None, i) when it is never closed."""
    n = len(pattern)
    neg = pattern[i:i + 1] == b"^"
    if neg:
        i += 1
    parts: list[bytes] = []
    while i < n:
        c = pattern[i:i + 1]
        if c == b"]":
            if not parts:  # "[]": matches nothing ("[^]": any byte)
                return (b"[\\s\\S]" if neg else b"[^\\s\\S]"), i
            return b"[" + (b"^" if neg else b"") + b"".join(parts) + b"]", i
        if c == b"\\" and i + 1 < n:
            i += 1
            c = pattern[i:i + 1]
        if pattern[i + 1:i + 2] == b"-" and i + 2 < n and pattern[i + 2:i + 3] != b"]":
            lo, hi = c, pattern[i + 2:i + 3]
            if lo > hi:
                lo, hi = hi, lo
            parts.append(re.escape(lo) + b"-" + re.escape(hi))
            i += 3
        else:
            parts.append(re.escape(c))
            i += 1
    return None, i


class _Page:
    __slots__ = ("conn", "req_id", "after", "waiting", "answers", "deadline_ms", "failed", "type")

    def __init__(self, conn: object, req_id: int, after: bytes, waiting: set[str], deadline_ms: int,
                 type_: str = "") -> None:
        self.type = type_
        self.conn = conn
        self.req_id = req_id
        self.after = after
        self.waiting = waiting
        self.answers: dict[str, ScanPeekResp] = {}
        self.failed: dict[str, str] = {}
        self.deadline_ms = deadline_ms


class ScanCoordinator:
    """Registers the scan messages on a NodeCore (its extension points)."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.pages: dict[int, _Page] = {}
        self._patterns: dict[bytes, re.Pattern[bytes]] = {}
        core.handle_requests({Scan: self._on_scan})  # the core's extension interface
        core.handle_requests({ScanPeek: self._on_peek})
        core.handle_responses({ScanPeekResp: self._on_peek_resp})
        core.handle_stored(StoreKind.SCAN_KEYS, self._on_scanned)
        core.add_ticker(self._tick)
        core.add_busy_probe(lambda: bool(self.pages))
        for name in ("scan_pages", "scan_pages_failed", "scan_peeks"):
            core.stats.setdefault(name, 0)

    def _pattern(self, match: bytes | None) -> re.Pattern[bytes] | None:
        if match is None or match == b"*":
            return None
        pat = self._patterns.get(match)
        if pat is None:
            if len(self._patterns) >= PATTERN_CACHE_MAX:
                self._patterns.clear()
            pat = self._patterns[match] = re.compile(glob_to_regex(match), re.DOTALL)
        return pat

    @staticmethod
    def _check(match: bytes | None, count: int) -> str:
        if match is not None and len(match) > SCAN_MATCH_BYTES_MAX:
            return f"MATCH pattern of {len(match)} bytes exceeds SCAN_MATCH_BYTES_MAX={SCAN_MATCH_BYTES_MAX}"
        if count < 1:
            return f"COUNT must be >= 1, got {count}"
        return ""

    # ----------------------------------------------------------- coordinator
    def _on_scan(self, conn: object, msg: Scan, now_ms: int, out: list[Any]) -> None:
        core = self.core
        error = self._check(msg.match, msg.count)
        if error:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message=error), now_ms, out)
            return
        if core.ring is None:
            core.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=f"node {core.node_id} is joining "
                                        "and has no ring yet"), now_ms, out)
            return
        if len(self.pages) >= SCANS_INFLIGHT_MAX:
            core.stats["overloaded"] += 1
            core.respond(conn, m.Reply(msg.id, m.OVERLOADED, message=f"node {core.node_id} has "
                                        f"SCANS_INFLIGHT_MAX={SCANS_INFLIGHT_MAX} scan pages open"), now_ms, out)
            return
        members = set(core.ring.nodes)
        if core.future_ring is not None:
            members |= set(core.future_ring.nodes)
        targets = sorted(n for n in members if n == core.node_id or core.membership.is_alive(n))
        missing = self.uncovered(targets)
        if missing:
            core.stats["scan_pages_failed"] += 1
            core.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=self._uncovered_message(
                missing, members - set(targets))), now_ms, out)
            return
        page_id = core.new_op_id()
        page = self.pages[page_id] = _Page(conn, msg.id, msg.after, set(targets),
                                           now_ms + core.settings.timeout_ms_read, msg.redis_type.lower())
        peek = ScanPeek(page_id, msg.after, msg.match, min(msg.count, SCAN_COUNT_MAX))
        for node in targets:
            if node == core.node_id:
                core.deliver(node, peek, now_ms, out)  # this node: through its request table
            else:
                out.append(Send(node, peek))
        if page_id in self.pages and not page.waiting:
            self._finish(page_id, now_ms, out)

    def uncovered(self, nodes: Iterable[str]) -> list[tuple[str, ...]]:
        """Preference lists of the current ring with no member among ``nodes``."""
        have = set(nodes)
        ring = self.core.ring
        assert ring is not None
        gaps: list[tuple[str, ...]] = []
        seen: set[tuple[str, ...]] = set()
        for tok in ring.tokens:
            plist = ring.preference_list_of_token(tok)
            if plist not in seen and not have.intersection(plist):
                seen.add(plist)
                gaps.append(plist)
        return gaps

    @staticmethod
    def _uncovered_message(gaps: list[tuple[str, ...]], down: Iterable[str]) -> str:
        return (f"scan unavailable: {len(gaps)} replica set(s) have no live member that answered "
                f"(e.g. {list(gaps[0])}); down or silent: {sorted(down)}. Retry the same cursor later")

    def _on_peek_resp(self, peer: str, msg: ScanPeekResp, now_ms: int, out: list[Any]) -> None:
        page = self.pages.get(msg.id)
        if page is None or peer not in page.waiting:
            return  # late (the page was answered without it) or from a node not asked
        page.waiting.discard(peer)
        if msg.ok:
            page.answers[peer] = msg
        else:
            page.failed[peer] = msg.error
        if not page.waiting:
            self._finish(msg.id, now_ms, out)

    def _tick(self, now_ms: int, out: list[Any]) -> None:
        for page_id, page in list(self.pages.items()):
            if page.deadline_ms <= now_ms:
                for node in page.waiting:
                    page.failed[node] = "no answer in time"
                page.waiting.clear()
                self._finish(page_id, now_ms, out)

    def _finish(self, page_id: int, now_ms: int, out: list[Any]) -> None:
        core = self.core
        page = self.pages.pop(page_id)
        answered = sorted(page.answers)
        no_ring: list[tuple[str, ...]] = [()]
        missing = self.uncovered(answered) if core.ring is not None else no_ring
        reply: m.Reply | ScanReply
        if missing:
            core.stats["scan_pages_failed"] += 1
            reply = m.Reply(page.req_id, m.UNAVAILABLE, message=self._uncovered_message(
                missing, set(page.failed)) + "".join(f"; {n}: {e}" for n, e in sorted(page.failed.items())))
        else:
            core.stats["scan_pages"] += 1
            keys, after = merge_pages(page.answers.values(), core.wall_ms(now_ms), page.type)
            reply = ScanReply(page.req_id, keys, after, answered)
        core.respond(page.conn, reply, now_ms, out)

    # ---------------------------------------------------------------- member
    def _on_peek(self, conn: object, msg: ScanPeek, now_ms: int, out: list[Any]) -> None:
        core = self.core
        core.stats["scan_peeks"] += 1
        error = self._check(msg.match, msg.limit)
        if error:
            core.respond(conn, ScanPeekResp(msg.id, False, error=error), now_ms, out)
            return
        limit = min(msg.limit, SCAN_COUNT_MAX)
        out.append(ScanKeys((StoreKind.SCAN_KEYS, conn, msg.id, msg.match, limit), msg.after or None, limit))

    def _on_scanned(self, token: tuple[Any, ...], ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        _, conn, req_id, match, limit = token
        if not ok:
            self.core.respond(conn, ScanPeekResp(req_id, False, error=f"scan failed: {result}"),
                               now_ms, out)
            return
        pat = self._pattern(match)
        entries: list[tuple[bytes, Version, bool, int]] = []
        size = 0
        last = result[-1][0] if len(result) >= limit else b""
        for key, rec in result:
            if pat is None or pat.fullmatch(key):
                entries.append((key, rec.version, rec.value is None, rec.expires_ms))
                size += len(key)
                if size >= SCAN_PEEK_BYTES_MAX and key != result[-1][0]:
                    last = key  # the page ends here; the coordinator asks again after it
                    break
        self.core.respond(conn, ScanPeekResp(req_id, True, entries, last), now_ms, out)


def _redis_type(version: Version) -> str:
    ctx = version.ctx
    return REDIS_TYPES.get(ctx.get("t", LWW) if ctx else LWW, "string")


def merge_pages(pages: Iterable[ScanPeekResp], now_ms: int, redis_type: str = "") -> tuple[list[bytes], bytes]:
    """Merge members' pages: (live keys in key order, next cursor; b"": done);
    expiry is judged at ``now_ms``: wall time, as ``expires_ms``.
    ``redis_type``: only keys whose newest record holds that Redis type ("": any)."""
    boundary = b""
    for p in pages:
        if p.last and (not boundary or p.last < boundary):
            boundary = p.last
    newest: dict[bytes, tuple[Version, bool, int]] = {}
    for p in pages:
        for key, version, tomb, expires in p.entries:
            if boundary and key > boundary:
                continue
            cur = newest.get(key)
            if cur is None or version.newer_than(cur[0]):
                newest[key] = (version, tomb, expires)
    ordered = sorted(newest)
    keys: list[bytes] = []
    size = 0
    for i, key in enumerate(ordered):
        version, tomb, expires = newest[key]
        if not tomb and (expires == 0 or now_ms < expires) and (not redis_type or _redis_type(version) == redis_type):
            keys.append(key)
            size += len(key)
            if size >= SCAN_REPLY_BYTES_MAX and i + 1 < len(ordered):
                boundary = key  # every key up to here is known: a valid place to stop
                break
    if boundary:
        boundary = _short_boundary(ordered, boundary, keys)
    return keys, boundary


def _short_boundary(ordered: list[bytes], boundary: bytes, keys: list[bytes]) -> bytes:
    """A page may end at any key it saw up to its boundary: prefer one short enough
    to make a cursor every client can parse (CURSOR_KEY_BYTES_PREFERRED_MAX); the
    keys after it are dropped from this page (the next one returns them)."""
    if len(boundary) <= CURSOR_KEY_BYTES_PREFERRED_MAX:
        return boundary
    for key in reversed(ordered):
        if key < boundary and len(key) <= CURSOR_KEY_BYTES_PREFERRED_MAX:
            while keys and keys[-1] > key:
                keys.pop()
            return key
    return boundary


__all__ = ["ScanCoordinator", "ScanKeys", "glob_to_regex", "merge_pages"]
