"""The quorumkv exception hierarchy (shared by client, server and core).

    QuorumKVError
    ├── InvalidRequestError      bad key/value/level: rejected before anything is written
    ├── NotFoundError (KeyError) the key has no value (never written, or deleted)
    ├── UnavailableError         the quorum could not be met; says what was needed and got
    │   └── QuorumTimeoutError   ... because replicas did not answer in time
    ├── OverloadedError          the node refused the request (a named bound was hit)
    ├── ProtocolError            a peer sent something that is not quorumkv protocol
    └── ConnectionFailedError    no node in the client's list could be reached
"""

from __future__ import annotations


class QuorumKVError(Exception):
    """Base class of all quorumkv errors."""


class InvalidRequestError(QuorumKVError, ValueError):
    pass


class NotFoundError(QuorumKVError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0]) if self.args else "not found"


class UnavailableError(QuorumKVError):
    pass


class QuorumTimeoutError(UnavailableError):
    pass


class OverloadedError(QuorumKVError):
    pass


class ProtocolError(QuorumKVError):
    pass


class ConnectionFailedError(QuorumKVError, ConnectionError):
    pass


class ConsistencyWarning(UserWarning):
    """R + W <= N: reads may be stale."""
