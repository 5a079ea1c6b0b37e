"""Ring-change messages: streaming data to a joining or replacing node, decommission.

Tags 50-59 (frozen once released).
"""

from __future__ import annotations

from .messages import _Msg
from .version import Record


class StreamRequest(_Msg, tag=50):
    """Send me (``target``) your records that ``target`` replicates in the ring of
    ``members``, scanning at most ``limit`` keys after ``after`` (key order)."""

    id: int
    target: str
    members: list[str]
    after: bytes | None
    limit: int


class StreamBatch(_Msg, tag=51):
    id: int
    records: list[tuple[bytes, Record]]
    next_after: bytes | None  # None: the scan reached the end
    scanned: int = 0


class Decommission(_Msg, tag=52):
    """Client -> the node that should leave: stream your data to the new owners, then leave."""

    id: int
    dry_run: bool = False


class RingPlan(_Msg, tag=53):
    """Reply to a dry run: token-space share that would move, per (from, to) pair."""

    id: int
    moves: list[tuple[str, str, float]]
    message: str = ""


RING_REQUESTS: tuple = (StreamRequest, Decommission)
RING_RESPONSES: tuple = (StreamBatch, RingPlan)
