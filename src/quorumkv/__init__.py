"""quorumkv: a leaderless, quorum-replicated key-value store."""

from .client import DEFAULT, AsyncClient, Client, Item
from .errors import (
    ConnectionFailedError,
    ConsistencyWarning,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ProtocolError,
    QuorumKVError,
    QuorumTimeoutError,
    UnavailableError,
)

ONE = "ONE"
QUORUM = "QUORUM"
ALL = "ALL"

__version__ = "0.1.0"
__all__ = [
    "ALL", "ONE", "QUORUM", "DEFAULT", "AsyncClient", "Client", "Item",
    "ConnectionFailedError", "ConsistencyWarning", "InvalidRequestError", "NotFoundError",
    "OverloadedError", "ProtocolError", "QuorumKVError", "QuorumTimeoutError", "UnavailableError",
]
