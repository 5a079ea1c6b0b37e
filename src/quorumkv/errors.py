"""The quorumkv exception hierarchy (shared by client, server and core), by blame.

    QuorumKVError
    ├── PeerFaultError           the other side sent garbage: not quorumkv protocol
    │   └── ProtocolError        ... (also a node's ``Error`` reply: refused at the protocol level)
    ├── RefusedError             the node understood the request and refused it
    │   ├── InvalidRequestError (ValueError)  bad key/value/level: rejected before anything is written
    │   └── OverloadedError      a named bound was hit: retry later
    ├── QuorumNotMetError        the request was fine, too few replicas made it
    │   └── UnavailableError     the quorum could not be met; says what was needed and got
    │       └── QuorumTimeoutError  ... because replicas did not answer in time
    ├── NotFoundError (KeyError) the key has no value (never written, or deleted): an answer
    └── ConnectionFailedError (ConnectionError)  no node in the client's list could be reached

The family bases let a caller decide by blame — fix the request (``RefusedError``),
retry elsewhere or later (``QuorumNotMetError``), suspect a version mismatch or a
stray peer (``PeerFaultError``) — while every older name stays the class it was, so
``except UnavailableError``, ``except ValueError`` and friends keep working. Which reply
status raises which class is one table: ``core/status.py`` (``STATUS_ERRORS``).
"""

from __future__ import annotations


class QuorumKVError(Exception):
    """Base class of all quorumkv errors."""


# -- the three families, by blame ------------------------------------------------------
class PeerFaultError(QuorumKVError):
    """The peer sent something that is not quorumkv protocol (a bad frame, a message
    this version does not know, an unexpected answer)."""


class RefusedError(QuorumKVError):
    """The node understood the request and refused it: invalid, or over a bound."""


class QuorumNotMetError(QuorumKVError):
    """A valid request that too few replicas carried out (down, partitioned, slow)."""


# -- the classes raised (names kept from before the families) ----------------------------
class ProtocolError(PeerFaultError):
    pass


class InvalidRequestError(RefusedError, ValueError):
    pass


class OverloadedError(RefusedError):
    pass


class UnavailableError(QuorumNotMetError):
    pass


class QuorumTimeoutError(UnavailableError):
    pass


class NotFoundError(QuorumKVError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0]) if self.args else "not found"


class ConnectionFailedError(QuorumKVError, ConnectionError):
    pass


class ConsistencyWarning(UserWarning):
    """R + W <= N: reads may be stale."""
