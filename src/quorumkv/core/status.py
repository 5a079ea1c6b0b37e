"""Reply statuses and what each one means to a caller — the one table.

A ``Reply`` (and ``AtomicReply``, ``TypedReply``...) carries ``status`` as a plain int on
the wire; ``Status`` names the codes (an ``IntEnum``: msgspec encodes it as its int, so
the frames are unchanged, and it compares equal to the int). Fields stay typed ``int``
so that a code this version does not know still decodes (and maps to an internal error)
instead of failing the whole frame.

``STATUS_ERRORS`` is the single status -> error map: the exception the Python client
raises and the error prefix the RESP front end answers with. ``client.py``,
``resp/commands.py`` and ``resp/atomic.py`` all go through it; ``tests/core/test_status.py``
checks that every status has an entry.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from ..errors import (
    InvalidRequestError,
    OverloadedError,
    QuorumKVError,
    QuorumTimeoutError,
    UnavailableError,
)


class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1  # a read found no value (never written, deleted, expired): not an error
    UNAVAILABLE = 2  # the quorum could not be met (too few live replicas)
    TIMEOUT = 3  # replicas did not answer in time (a write may still have been applied)
    INVALID = 4  # the request was rejected before anything was written
    OVERLOADED = 5  # the node refused: a named bound was hit
    INTERNAL = 6  # a bug on the node


#: The same enum, for modules where ``Status`` is the status *request*
#: (``messages.Status``).
ReplyStatus = Status


class StatusError(NamedTuple):
    """What a failed status becomes: ``error`` for the Python client, ``redis_prefix``
    for RESP (the Redis error code that starts the error line)."""

    error: type[QuorumKVError]
    redis_prefix: str


#: Statuses that are answers, not failures.
SUCCESS = frozenset({Status.OK, Status.NOT_FOUND})

#: Every failing status -> its error. A status missing here (a newer node's code)
#: is treated as INTERNAL.
STATUS_ERRORS: dict[Status, StatusError] = {
    Status.UNAVAILABLE: StatusError(UnavailableError, "NOQUORUM"),
    Status.TIMEOUT: StatusError(QuorumTimeoutError, "TIMEOUT"),
    Status.INVALID: StatusError(InvalidRequestError, "ERR"),
    Status.OVERLOADED: StatusError(OverloadedError, "OVERLOADED"),
    Status.INTERNAL: StatusError(QuorumKVError, "ERR internal error:"),
}


def status_error(status: int) -> StatusError | None:
    """None for a success, else the entry of ``status`` (INTERNAL's when unknown)."""
    if status in SUCCESS:
        return None
    try:
        return STATUS_ERRORS[Status(status)]
    except ValueError:
        return STATUS_ERRORS[Status.INTERNAL]


def raise_for_status(status: int, message: str) -> None:
    """Raise the client-side exception of a failed ``status`` (nothing on success)."""
    entry = status_error(status)
    if entry is None:
        return
    if entry.error is QuorumKVError:  # internal or unknown: say which code, if no message
        raise QuorumKVError(message or f"node error (status {int(status)})")
    raise entry.error(message)


def redis_error_line(status: int, message: str) -> str | None:
    """The RESP error line of a failed ``status`` (None on success)."""
    entry = status_error(status)
    return None if entry is None else f"{entry.redis_prefix} {message}"
