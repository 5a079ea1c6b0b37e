"""Checks on a request that both ends make: the client before it sends, the
coordinator (``core.node``) when it receives. Kept apart from ``core.node`` so the
blocking client, and so ``quorumkv get``, start without importing the node core."""

from __future__ import annotations

from ..errors import InvalidRequestError
from . import messages as m
from .limits import KEY_BYTES_MAX, VALUE_BYTES_MAX


def level_to_wire(level: int | str | None) -> int:
    if level is None:
        return m.LEVEL_DEFAULT
    if isinstance(level, str):
        name = level.strip().upper()
        for code, known in m.LEVEL_NAMES.items():
            if known == name:
                return code
        if name.isdigit():  # "2" is 2; "0" is refused like 0, not taken as "the default"
            return level_to_wire(int(name))
        raise InvalidRequestError(f"{level!r} is not a consistency level (integer, ONE, QUORUM or ALL)")
    if isinstance(level, bool) or not isinstance(level, int):
        raise InvalidRequestError(f"{level!r} is not a consistency level (integer, ONE, QUORUM or ALL)")
    if level < 1:
        raise InvalidRequestError(f"consistency level must be >= 1, got {level}")
    return level


def validate_key(key: bytes) -> None:
    if not key:
        raise InvalidRequestError("empty key")
    if len(key) > KEY_BYTES_MAX:
        raise InvalidRequestError(f"key of {len(key)} bytes exceeds KEY_BYTES_MAX={KEY_BYTES_MAX}")


def validate_value(value: bytes | None) -> None:
    if value is not None and len(value) > VALUE_BYTES_MAX:
        raise InvalidRequestError(
            f"value of {len(value)} bytes exceeds VALUE_BYTES_MAX={VALUE_BYTES_MAX}"
        )
