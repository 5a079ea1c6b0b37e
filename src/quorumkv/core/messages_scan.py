"""Wire messages of the cluster-wide key scan (``core/scan.py``).

A client sends ``Scan`` to any node; that node (the coordinator) asks every live
member for a page of its local keys (``ScanPeek``), merges the pages and answers
``ScanReply``. ``after`` is the cursor: every key <= it has been returned already
(b"": start from the beginning); a reply with ``after == b""`` ends the scan.
"""

from __future__ import annotations

from .messages import _Msg
from .version import Version


class Scan(_Msg, tag=70, frozen=True):
    """Client -> node: the next page of the cluster's live keys after ``after``."""

    id: int
    after: bytes = b""
    match: bytes | None = None  # Redis glob (``*``, ``?``, ``[...]``, ``\\x``); None: every key
    count: int = 10  # keys each member scans for this page (a hint, as in Redis)
    #: only keys whose value is of this Redis type (string, set, hash: core/typed.py
    #: REDIS_TYPES); "": any
    redis_type: str = ""


class ScanReply(_Msg, tag=71, frozen=True):
    id: int
    keys: list[bytes]
    after: bytes  # the next cursor; b"": the scan is complete
    nodes: list[str] = []  # members whose pages were merged


class ScanPeek(_Msg, tag=72, frozen=True):
    """Coordinator -> member: up to ``limit`` of your local keys after ``after``."""

    id: int
    after: bytes
    match: bytes | None
    limit: int


class ScanPeekResp(_Msg, tag=73, frozen=True):
    id: int
    ok: bool
    #: (key, version, tombstone, expires_ms) of the matching keys scanned, key order
    entries: list[tuple[bytes, Version, bool, int]] = []
    #: the last key scanned when more may follow (b"": this member has no more)
    last: bytes = b""
    error: str = ""


SCAN_REQUESTS: tuple[type[_Msg], ...] = (Scan, ScanPeek)
SCAN_RESPONSES: tuple[type[_Msg], ...] = (ScanReply, ScanPeekResp)
