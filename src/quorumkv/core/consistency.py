"""Consistency levels: ONE / QUORUM / ALL or an integer, resolved against N."""

from __future__ import annotations

from ..errors import InvalidRequestError

LEVELS = ("ONE", "QUORUM", "ALL")


def quorum_of(n: int) -> int:
    return n // 2 + 1


def resolve(level: int | str | None, n: int, default: int, what: str) -> int:
    """Turn a per-request level into a replica count, or raise InvalidRequestError.

    ``None`` means "use the default". ``what`` is "R" or "W", for the message.
    """
    if level is None:
        count = default
    elif isinstance(level, bool):
        raise InvalidRequestError(f"{what} must be an integer or ONE/QUORUM/ALL, not {level!r}")
    elif isinstance(level, int):
        count = level
    elif isinstance(level, str):
        name = level.strip().upper()
        if name == "ONE":
            count = 1
        elif name == "QUORUM":
            count = quorum_of(n)
        elif name == "ALL":
            count = n
        elif name.isdigit():
            count = int(name)
        else:
            raise InvalidRequestError(
                f"{what}={level!r} is not a consistency level (use an integer, ONE, QUORUM or ALL)"
            )
    else:
        raise InvalidRequestError(f"{what} must be an integer or ONE/QUORUM/ALL, not {level!r}")
    if count < 1 or count > n:
        raise InvalidRequestError(f"{what}={count} is impossible with N={n}: need 1 <= {what} <= {n}")
    return count


def weak_warning(r: int, w: int, n: int) -> str | None:
    """A warning when R + W <= N: a read may miss the latest acknowledged write."""
    if r + w <= n:
        return (
            f"R={r} + W={w} <= N={n}: this is a partial quorum; a read may miss the latest "
            f"acknowledged write (see `quorumkv math quorum --n {n} --r {r} --w {w}`)"
        )
    return None
