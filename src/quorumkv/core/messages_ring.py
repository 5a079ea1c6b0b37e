"""Ring-change messages: streaming data to a joining or replacing node, decommission.

Tags 50-59 (frozen once released).
"""

from __future__ import annotations

from .messages import _Msg
from .version import Record


class StreamRequest(_Msg, tag=50, frozen=True):
    """Send me (``target``) your records that ``target`` replicates in the ring of
    ``members``, scanning at most ``limit`` keys after ``after`` (key order)."""

    id: int
    target: str
    members: list[str]
    after: bytes | None
    limit: int


class StreamBatch(_Msg, tag=51, frozen=True):
    id: int
    records: list[tuple[bytes, Record]]
    next_after: bytes | None  # None: the scan reached the end
    scanned: int = 0


class Decommission(_Msg, tag=52, frozen=True):
    """Client -> the node that should leave: stream your data to the new owners, then leave.

    ``force``: leave even if fewer than N live nodes remain, and give each record at
    most ``ringchange.STREAM_FORCE_ATTEMPTS_MAX`` attempts (the rest are counted in
    ``stream_undelivered``); sent to a node already leaving, it applies from then on.
    """

    id: int
    dry_run: bool = False
    force: bool = False


class RingPlan(_Msg, tag=53, frozen=True):
    """Reply to a dry run: token-space share that would move, per (from, to) pair."""

    id: int
    moves: list[tuple[str, str, float]]
    message: str = ""


class Cleanup(_Msg, tag=54, frozen=True):
    """Client -> a node: drop the records you no longer replicate (``core/cleanup.py``).
    Answered at once with a ``Reply``; progress is in ``Status`` (``cleanup_*``)."""

    id: int
    dry_run: bool = False
    keys_per_s: int = 0  # 0: the node's default (cleanup.CLEANUP_KEYS_PER_S)


RING_REQUESTS: tuple[type[_Msg], ...] = (StreamRequest, Decommission, Cleanup)
RING_RESPONSES: tuple[type[_Msg], ...] = (StreamBatch, RingPlan)
