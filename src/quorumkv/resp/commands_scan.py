"""SCAN and KEYS: the cluster-wide key scan (``core/scan.py``) over RESP.

The cursor is the last key returned, written as a decimal number (the bytes
``\\x01 + key`` read as a big-endian integer) so that clients that parse cursors as
integers (redis-py) accept it; ``0`` starts and ends a scan, as in Redis. It names no
node: a client may continue a scan on any node, after the one it started on died.

Unlike Redis, a key is returned at most once per scan (pages are in key order), and
a page is either complete or refused (``NOQUORUM``: some keys have no live replica
that answered; retry the same cursor).
"""

from __future__ import annotations

from typing import NamedTuple

from ..core.limits import KEY_BYTES_MAX
from ..core.messages_scan import Scan, ScanReply
from .common import CommandError, _c, _check, _int_arg, _lower
from .parser import encode_array, encode_bulk

#: COUNT when a SCAN gives none (Redis's default).
SCAN_COUNT_DEFAULT = 10
#: Keys a KEYS page asks each member to scan (KEYS wants everything anyway).
KEYS_PAGE_COUNT = 1_000
#: Keys KEYS returns at most; past it the command fails and points at SCAN (Redis's
#: KEYS has no bound and blocks the server; here it would hold every key in memory).
KEYS_RESULT_MAX = 100_000
#: Digits of the longest cursor a key can make (KEY_BYTES_MAX + 1 bytes as decimal).
CURSOR_DIGITS_MAX = (KEY_BYTES_MAX + 1) * 8 * 30103 // 100000 + 2
#: Python refuses int <-> str conversions past 4,300 digits (a guard against
#: quadratic parsing); longer cursors are converted in chunks of this many digits.
_CHUNK_DIGITS = 1_000
_INT_DIGITS_SAFE = 4_000


class ScanOp(NamedTuple):
    """An op that builds its own request: one page of the cluster-wide scan."""

    after: bytes
    match: bytes | None
    count: int
    key: bytes = b""  # no session floor is kept for a scan
    type: str = ""  # only keys of this Redis type ("": any)

    def request(self, rid: int) -> Scan:
        return Scan(rid, self.after, self.match, self.count, self.type)


def cursor_to_after(raw: bytes) -> bytes:
    """A RESP cursor -> the key after which the scan continues (b"": from the start)."""
    if not raw.isdigit() or len(raw) > CURSOR_DIGITS_MAX:
        raise CommandError("ERR invalid cursor")
    if len(raw) <= _INT_DIGITS_SAFE:
        n = int(raw)
    else:
        n = 0
        base = 10 ** _CHUNK_DIGITS
        head = len(raw) % _CHUNK_DIGITS or _CHUNK_DIGITS
        n = int(raw[:head])
        for i in range(head, len(raw), _CHUNK_DIGITS):
            n = n * base + int(raw[i:i + _CHUNK_DIGITS])
    if n == 0:
        return b""
    data = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if data[:1] != b"\x01" or len(data) < 2:
        raise CommandError("ERR invalid cursor")
    return data[1:]


def after_to_cursor(after: bytes) -> bytes:
    """The key a page ended at -> the RESP cursor (b"0": the scan is complete)."""
    if not after:
        return b"0"
    n = int.from_bytes(b"\x01" + after, "big")
    if n.bit_length() < _INT_DIGITS_SAFE * 3:  # 3 bits per digit: well under the limit
        return str(n).encode()
    chunks = []
    base = 10 ** _CHUNK_DIGITS
    while n:
        n, r = divmod(n, base)
        chunks.append(r)
    return (str(chunks[-1]) + "".join(f"{c:0{_CHUNK_DIGITS}d}" for c in reversed(chunks[:-1]))).encode()


def _page(reply) -> ScanReply:
    if type(reply) is ScanReply:
        return reply
    _check(reply)  # raises the error a failed page maps to (NOQUORUM, TIMEOUT ...)
    raise CommandError("ERR unexpected reply to a scan page")


def cmd_scan(s, node, args):
    after = cursor_to_after(args[1])
    match = None
    count = SCAN_COUNT_DEFAULT
    type_ = ""
    i = 2
    while i < len(args):
        opt = _lower(args[i])
        if i + 1 >= len(args):
            raise CommandError("ERR syntax error")
        if opt == "match":
            match = args[i + 1]
        elif opt == "count":
            count = _int_arg(args[i + 1])
            if count < 1:
                raise CommandError("ERR syntax error")
        elif opt == "type":
            type_ = _lower(args[i + 1])  # string, set or hash (core/typed.py REDIS_TYPES)
        else:
            raise CommandError("ERR syntax error")
        i += 2
    (reply,) = yield (ScanOp(after, match, count, type=type_),)
    page = _page(reply)
    return encode_array([encode_bulk(after_to_cursor(page.after)), encode_array([encode_bulk(k) for k in page.keys])])


def cmd_keys(s, node, args):
    pattern = args[1]
    after = b""
    found: list[bytes] = []
    while True:
        (reply,) = yield (ScanOp(after, pattern, KEYS_PAGE_COUNT),)
        page = _page(reply)
        found.extend(page.keys)
        if len(found) > KEYS_RESULT_MAX:
            raise CommandError(f"ERR KEYS matched more than KEYS_RESULT_MAX={KEYS_RESULT_MAX} keys; use SCAN")
        after = page.after
        if not after:
            return encode_array([encode_bulk(k) for k in found])


SCAN_COMMANDS = [
    _c("scan", cmd_scan, -2, ["readonly"], (0, 0, 0), "generic",
       "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: the cluster's live keys, each once, "
       "in key order; the cursor is the last key returned.", "2.8.0"),
    _c("keys", cmd_keys, 2, ["readonly"], (0, 0, 0), "generic",
       f"Every live key matching a pattern, cluster-wide (at most {KEYS_RESULT_MAX}; use SCAN for more)."),
]

__all__ = ["SCAN_COMMANDS", "ScanOp", "after_to_cursor", "cursor_to_after"]
