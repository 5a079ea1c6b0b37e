"""What every RESP command module shares: the ops a handler yields, its error type,
argument helpers, the reply check and the command-table record.

Below ``commands.py`` and the command families (``commands_crdt``, ``commands_scan``,
``atomic``): they all import it, it imports none of them.
"""

from __future__ import annotations

from typing import NamedTuple

from ..core import messages as m
from ..core.status import redis_error_line


class ReadOp(NamedTuple):
    key: bytes


class WriteOp(NamedTuple):
    key: bytes
    value: bytes | None  # None: delete (tombstone)
    ttl_ms: int = 0


class CommandError(Exception):
    """Raised inside a handler: becomes an error reply. ``message`` starts with the
    Redis error code (``ERR``, ``NOQUORUM``, ``TIMEOUT``, ``WRONGPASS`` ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _int_arg(raw: bytes) -> int:
    try:
        if len(raw) > 20:
            raise ValueError
        return int(raw)
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


def check_status(reply):
    """``reply`` when its status is a success, else a CommandError carrying the Redis
    error of its status (core/status.py, the one status -> error table)."""
    line = redis_error_line(reply.status, reply.message)
    if line is not None:
        raise CommandError(line)
    return reply


def _check(reply) -> m.Reply:
    """A finished quorum round's reply, or a CommandError in Redis's conventions."""
    if type(reply) is not m.Reply:
        raise CommandError(f"ERR {getattr(reply, 'message', 'unexpected reply')}")
    return check_status(reply)


def _lower(raw: bytes) -> str:
    return raw.decode("latin-1").lower()


class Command(NamedTuple):
    name: str
    handler: object
    arity: int  # Redis convention: n = exactly n words (name included), -n = at least n
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    since: str = "1.0.0"
    needs_auth: bool = True


def _c(name, handler, arity, flags, keys, group, summary, since="1.0.0", needs_auth=True) -> Command:
    first, last, step = keys
    return Command(name, handler, arity, tuple(flags), first, last, step, group, summary, since, needs_auth)
