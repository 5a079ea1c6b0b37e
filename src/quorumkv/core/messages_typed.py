"""Typed-write messages: counters, sets, maps and causal (sibling) writes.

Tags 100-109 (frozen once released). A client sends ``Update`` to any node; the node
has the update applied by a primary replica of the key (itself when it is one, else
``TypedApply`` to the first live primary, which answers ``TypedApplied``), then
replicates the resulting record like any write and answers a plain ``Reply``
(core/typed_coord.py). Reads of typed keys are plain ``Get``s.
"""

from __future__ import annotations

from .messages import LEVEL_DEFAULT, Put, _Msg
from .version import Record


class Update(_Msg, tag=100, frozen=True):
    """client -> node: apply ``action`` to the typed value of ``key``."""

    id: int
    key: bytes
    kind: int  # core.typed: CAUSAL=1, COUNTER=2, SET=3, MAP=4
    action: str  # core.typed.ACTIONS
    args: list[bytes] = []
    delta: int = 0  # counters: the amount (negative: decrement)
    ctx: bytes | None = None  # causal writes: the context of the read this write resolves
    w: int = LEVEL_DEFAULT


class TypedApply(_Msg, tag=101, frozen=True):
    """node -> primary: apply this update to your local copy, durably, and return it."""

    id: int
    key: bytes
    kind: int
    action: str
    args: list[bytes] = []
    delta: int = 0
    ctx: bytes | None = None


class TypedApplied(_Msg, tag=102, frozen=True):
    id: int
    ok: bool
    record: Record | None = None  # the primary's new record (stored durably there)
    status: int = 0  # when not ok: a Reply status (INVALID, UNAVAILABLE, OVERLOADED...)
    error: str = ""


class TypedPut(Put, tag=103, frozen=True):
    """Internal, never on the wire: a write round for a record a primary already made."""

    record: Record | None = None


TYPED_REQUESTS: tuple[type[_Msg], ...] = (Update, TypedApply)
TYPED_RESPONSES: tuple[type[_Msg], ...] = (TypedApplied,)
