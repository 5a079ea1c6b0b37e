"""Wire messages of one protocol family; ``wire.py`` folds them into the unions.

Tags: anti-entropy uses 40-49, ring changes 50-59 (frozen once released).

Anti-entropy (``core/antientropy.py``) between an initiator A and a peer B::

    A -> B  AETree      A's Merkle leaves over the keys A and B share
    B -> A  AETreeResp  the leaves that differ, with B's (key, version) there
    A -> B  AEExchange  records B lacks or has older; keys A wants from B
    B -> A  AEExchangeResp  B stored those; here are the records A asked for
    A -> B  AEGc        tombstone GC: "do you hold these?" / "purge exactly these"
    B -> A  AEGcResp
    client -> node  Repair      run a full anti-entropy pass now
    node -> client  RepairReply what it compared and repaired
"""

from __future__ import annotations

from .messages import _Msg
from .version import Record, Version


class AETree(_Msg, tag=40, frozen=True):
    id: int
    node: str  # the initiator: the tree covers the keys it shares with the receiver
    ring_digest: int  # both sides must see the same ring, or the shared key sets differ
    leaf_bits: int
    leaves: bytes  # 8 bytes a leaf, big-endian (MerkleTree.leaves_bytes)


class AETreeResp(_Msg, tag=41, frozen=True):
    id: int
    ok: bool
    error: str = ""
    leaves: list[int] = []  # differing leaves whose entries follow (whole leaves only)
    entries: list[tuple[bytes, Version]] = []  # B's keys in those leaves
    truncated: bool = False  # more leaves differ than fitted: run another session
    nodes_compared: int = 0  # Merkle nodes B compared to find them


class AEExchange(_Msg, tag=42, frozen=True):
    id: int
    records: list[tuple[bytes, Record]] = []  # store each if newer (push)
    keys: list[bytes] = []  # answer with your record for each (pull)


class AEExchangeResp(_Msg, tag=43, frozen=True):
    id: int
    ok: bool
    error: str = ""
    stored: int = 0
    records: list[tuple[bytes, Record]] = []
    deferred: list[bytes] = []  # asked for but over the message bound: ask again


class AEGc(_Msg, tag=44, frozen=True):
    """Tombstone GC. ``purge`` False: answer whether you hold each (key, version) or
    something newer. True: delete each record whose version is exactly that tombstone."""

    id: int
    entries: list[tuple[bytes, Version]]
    purge: bool = False


class AEGcResp(_Msg, tag=45, frozen=True):
    id: int
    held: list[bool] = []


class Repair(_Msg, tag=46, frozen=True):
    """Client -> node: run a full anti-entropy pass with every peer now."""

    id: int


class RepairReply(_Msg, tag=47, frozen=True):
    id: int
    node: str
    ok: bool
    summary: dict[str, int] = {}
    peers_synced: list[str] = []
    peers_failed: dict[str, str] = {}
    message: str = ""


AE_REQUESTS: tuple[type[_Msg], ...] = (AETree, AEExchange, AEGc, Repair)
AE_RESPONSES: tuple[type[_Msg], ...] = (AETreeResp, AEExchangeResp, AEGcResp, RepairReply)
