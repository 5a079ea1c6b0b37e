"""Wire messages (client <-> node and node <-> node), as msgspec structs.

Frozen format: each frame is a 4-byte big-endian length followed by a msgpack
array whose first element is the message tag (below). Every request carries an
``id`` chosen by the sender; the answer on the same connection carries the same id,
so requests pipeline and answers may come back in any order.

Levels (``r``/``w``) travel as an int, or 0 meaning "the node's default"; strings
(ONE/QUORUM/ALL) are sent as negative codes so the frame stays small.
"""

from __future__ import annotations

import msgspec

from .version import Record, Version

# Level codes on the wire.
LEVEL_DEFAULT = 0
LEVEL_ONE = -1
LEVEL_QUORUM = -2
LEVEL_ALL = -3
LEVEL_NAMES = {LEVEL_ONE: "ONE", LEVEL_QUORUM: "QUORUM", LEVEL_ALL: "ALL"}


class _Msg(msgspec.Struct, array_like=True, tag=True, frozen=True):
    pass


# --- client -> node -------------------------------------------------------------
class Get(_Msg, tag=1):
    id: int
    key: bytes
    r: int = LEVEL_DEFAULT


class Put(_Msg, tag=2):
    id: int
    key: bytes
    value: bytes | None  # None: delete (a tombstone write)
    w: int = LEVEL_DEFAULT
    ttl_ms: int = 0  # > 0: the value expires this long after the coordinator accepts it


class Ping(_Msg, tag=3):
    id: int


# --- node -> client -------------------------------------------------------------
# status codes of Reply
OK = 0
NOT_FOUND = 1
UNAVAILABLE = 2
TIMEOUT = 3
INVALID = 4
OVERLOADED = 5
INTERNAL = 6


class Reply(_Msg, tag=10):
    id: int
    status: int
    value: bytes | None = None
    version: Version | None = None
    message: str = ""
    warning: str = ""
    expires_ms: int = 0  # reads: absolute expiry of the value returned (0 = never)


class Pong(_Msg, tag=11):
    id: int
    node: str
    n: int
    r: int
    w: int
    members: dict[str, str] = {}
    storage: str = ""
    keys: int = -1  # records (tombstones included) in the node's local storage


# --- node -> node ---------------------------------------------------------------
class RepWrite(_Msg, tag=20):
    id: int
    key: bytes
    record: Record


class RepWriteAck(_Msg, tag=21):
    id: int
    ok: bool
    error: str = ""


class RepRead(_Msg, tag=22):
    id: int
    key: bytes


class RepReadResp(_Msg, tag=23):
    id: int
    ok: bool
    record: Record | None = None
    error: str = ""


class Error(_Msg, tag=99):
    """Sent before closing a connection that sent something unacceptable."""

    id: int
    message: str


ClientRequest = Get | Put | Ping
PeerRequest = RepWrite | RepRead
Request = Get | Put | Ping | RepWrite | RepRead
Response = Reply | Pong | RepWriteAck | RepReadResp | Error
Message = Request | Response
