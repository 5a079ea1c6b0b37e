"""The history of a simulated run: what clients invoked and what they were told.

Jepsen's shape: every client operation is an ``invoke`` record followed by exactly
one completion record, ``ok`` / ``fail`` / ``unknown``, each stamped with the
virtual time (µs) at the client. Nemesis actions (crash, partition, heal...) are
recorded in the same list so a failing history reads as a story.

* ``ok``      — the cluster said it happened (a read's version is recorded).
* ``fail``    — the cluster said the level was not confirmed. For a *write* this
  does not mean "did not happen": quorumkv does not roll back, the write may have
  landed on some replicas (docs/consistency.md), so checkers treat it like
  ``unknown``.
* ``unknown`` — no answer (connection lost with the coordinator, client timeout).

The serialisation is canonical JSON lines, so two runs with the same seed give
byte-identical bytes and the same ``sha256()``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..core.version import Version

INVOKE, OK, FAIL, UNKNOWN = "invoke", "ok", "fail", "unknown"


@dataclass
class Op:
    """One client operation and everything the checkers need to know about it."""

    op_id: int
    client: int
    kind: str  # "get" | "put" | "del"
    key: bytes
    value: bytes | None  # puts: the (unique) value written; gets: the value read
    node: str  # the coordinator it was sent to
    invoke_us: int
    level: int  # R for gets, W for writes
    outcome: str = INVOKE
    complete_us: int | None = None
    #: writes: the version the coordinator gave it (seen by the harness in the
    #: coordinator's effects); gets: the version returned (None: no record at all).
    version: Version | None = None
    status: int | None = None  # the Reply status code, when there was a reply
    #: a write that certainly did not happen (refused: INVALID, OVERLOADED, or the
    #: connection was refused before the coordinator saw it)
    no_effect: bool = False
    message: str = ""

    @property
    def is_write(self) -> bool:
        return self.kind != "get"


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)  # (time µs, nemesis text)

    def invoke(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def complete(self, op: Op, outcome: str, now_us: int, **kw) -> None:
        assert op.outcome == INVOKE, f"op {op.op_id} completed twice"
        op.outcome = outcome
        op.complete_us = now_us
        for name, value in kw.items():
            setattr(op, name, value)

    def nemesis(self, now_us: int, text: str) -> None:
        self.events.append((now_us, text))

    # ----------------------------------------------------------------- output
    def lines(self) -> list[str]:
        """Canonical JSON lines, sorted by time (invoke and completion separately)."""
        rows: list[tuple[int, int, dict]] = []
        for op in self.ops:
            base = {"op": op.op_id, "client": op.client, "f": op.kind, "key": op.key.hex(), "node": op.node}
            inv = dict(base, type=INVOKE, t_us=op.invoke_us, level=op.level)
            if op.kind == "put":
                inv["value"] = op.value.hex() if op.value is not None else None
            rows.append((op.invoke_us, 0, inv))
            if op.outcome != INVOKE:
                done = dict(base, type=op.outcome, t_us=op.complete_us, status=op.status,
                            version=str(op.version) if op.version is not None else None)
                if op.kind == "get":
                    done["value"] = op.value.hex() if op.value is not None else None
                if op.message:
                    done["message"] = op.message
                rows.append((op.complete_us, 1, done))
        for t_us, text in self.events:
            rows.append((t_us, 2, {"type": "nemesis", "t_us": t_us, "what": text}))
        rows.sort(key=lambda row: (row[0], row[1], row[2].get("op", 0)))
        return [json.dumps(row, sort_keys=True, separators=(",", ":")) for _, _, row in rows]

    def dumps(self) -> str:
        return "\n".join(self.lines()) + "\n"

    def sha256(self) -> str:
        return hashlib.sha256(self.dumps().encode()).hexdigest()
