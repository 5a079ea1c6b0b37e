"""Per-key linearizability checking of a recorded history (Jepsen/Knossos style).

A history is a list of ``Op``s: each operation a client ran, with its invocation and
completion times and its outcome — ``ok`` (it happened, with this result), ``fail``
(it certainly did not happen) or ``info`` (unknown: a time-out, a lost connection;
it may have happened at any time after its invocation, or never).

``check_key`` runs the Wing & Gong search with Lowe's memoisation (as Knossos' "wgl"
and porcupine do): walk the operations in invocation order, try to linearize an
operation whose invocation precedes every pending completion, apply it to the model,
and backtrack when the model refuses; a (set of linearized ops, state) pair seen
before is not explored again. ``info`` operations complete at infinity and need not
be linearized at all. The search is exponential in the worst case, so it has a time
budget: past it the verdict is ``unknown``.

For an invalid key, ``counterexample`` shrinks the history to the shortest prefix (by
completion) that is still not linearizable and returns its last operation with the
operations concurrent with it — what a person reads to see the anomaly.

Models (``MODELS``), states are hashable:

* ``register``: ``write v`` / ``read -> v`` (None: absent).
* ``cas-register``: also ``cas (expected, new) -> applied?``.
* ``counter``: ``incr d -> n`` (the value after) / ``read -> n``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

INFINITY = float("inf")
#: Search steps between two looks at the clock (the budget check).
BUDGET_CHECK_STEPS = 1_000

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"


@dataclass
class Op:
    process: int
    f: str  # read, write, cas, incr
    key: str
    value: object  # write: v; cas: (expected, new); incr: delta; read: None
    invoke_s: float
    complete_s: float | None = None
    type: str = "invoke"  # ok, fail, info
    result: object = None  # read: value; cas: bool; incr: n
    error: str = ""
    index: int = field(default=0)

    def to_dict(self) -> dict:
        return {"process": self.process, "f": self.f, "key": self.key, "value": _plain(self.value),
                "type": self.type, "result": _plain(self.result), "invoke_s": round(self.invoke_s, 6),
                "complete_s": None if self.complete_s is None else round(self.complete_s, 6),
                "error": self.error}


def _plain(x):
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, tuple):
        return [_plain(v) for v in x]
    return x


# ------------------------------------------------------------------- models
def step_register(state, op: Op):
    """(legal, new state) of ``op`` on ``state``; ``op.result`` as the client saw it."""
    if op.f == "read":
        return (op.type == "info" or op.result == state), state
    if op.f == "write":
        return True, op.value
    if op.f == "cas":
        expected, new = op.value
        if op.type == "info":  # unknown outcome: applied if it could have been
            return state == expected, new
        if op.result:
            return state == expected, new
        return state != expected, state
    raise ValueError(f"register model has no operation {op.f!r}")


def step_counter(state, op: Op):
    if op.f == "read":
        return (op.type == "info" or op.result == state), state
    if op.f == "incr":
        new = state + op.value
        return (op.type == "info" or op.result == new), new
    raise ValueError(f"counter model has no operation {op.f!r}")


MODELS = {"register": (step_register, None), "cas-register": (step_register, None), "counter": (step_counter, 0)}


# ------------------------------------------------------------------- search
@dataclass
class _Entry:
    op_i: int
    is_call: bool
    time: float
    prev: "_Entry | None" = None
    next: "_Entry | None" = None
    match: "_Entry | None" = None


def _prepare(ops: list[Op]) -> list[Op]:
    """Drop what cannot matter: failed ops (they did not happen) and reads of unknown
    outcome (they change nothing)."""
    return [o for o in ops if o.type == "ok" or (o.type == "info" and o.f != "read")]


def linearizable(ops: list[Op], model: str, deadline: float) -> str:
    """VALID, INVALID or UNKNOWN (``deadline``: a time.monotonic() value)."""
    step, init = MODELS[model]
    ops = _prepare(ops)
    if not ops:
        return VALID
    entries = []
    for i, o in enumerate(ops):
        call = _Entry(i, True, o.invoke_s)
        ret = _Entry(i, False, INFINITY if o.type == "info" else o.complete_s)
        call.match = ret
        entries.append(call)
        entries.append(ret)
    # Completions before invocations at equal times: an op invoked exactly when another
    # completed is not concurrent with it.
    entries.sort(key=lambda e: (e.time, e.is_call))
    head = _Entry(-1, False, -INFINITY)
    prev = head
    for e in entries:
        prev.next = e
        e.prev = prev
        prev = e
    ok_left = sum(1 for o in ops if o.type == "ok")
    state = init
    linearized = 0
    cache: set = set()
    stack: list = []
    entry = head.next
    steps = 0
    while ok_left:
        steps += 1
        if steps % BUDGET_CHECK_STEPS == 0 and time.monotonic() > deadline:
            return UNKNOWN
        if entry is not None and entry.is_call:
            op = ops[entry.op_i]
            legal, new_state = step(state, op)
            if legal:
                bits = linearized | (1 << entry.op_i)
                key = (bits, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized = bits
                    if op.type == "ok":
                        ok_left -= 1
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
            continue
        # A completion (or the end): the ops before it cannot be ordered this way. Backtrack.
        if not stack:
            return INVALID
        entry, state = stack.pop()
        op = ops[entry.op_i]
        linearized &= ~(1 << entry.op_i)
        if op.type == "ok":
            ok_left += 1
        _unlift(entry)
        entry = entry.next
    return VALID


def _lift(call: _Entry) -> None:
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Entry) -> None:
    ret = call.match
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def counterexample(ops: list[Op], model: str, deadline: float) -> list[Op]:
    """The last op of the shortest non-linearizable prefix (ok ops by completion),
    with every op concurrent with it (others' completions after its invocation)."""
    done = sorted((o for o in ops if o.type == "ok"), key=lambda o: o.complete_s)
    lo, hi = 1, len(done)
    while lo < hi:  # shortest prefix of completions that is invalid
        mid = (lo + hi) // 2
        if linearizable(_prefix(ops, done[mid - 1].complete_s), model, deadline) == INVALID:
            hi = mid
        else:
            lo = mid + 1
    last = done[lo - 1]
    cut = last.complete_s
    window = [o for o in ops if o.type in ("ok", "info") and o.invoke_s <= cut
              and (o.complete_s is None or o.complete_s >= _earliest_start(ops, last))]
    return sorted(window, key=lambda o: o.invoke_s)


def _prefix(ops: list[Op], cut: float) -> list[Op]:
    """The history as it stood at time ``cut``: ops not invoked yet are left out, and
    ops still running then are pending (``info``: they may or may not have happened)."""
    out = []
    for o in ops:
        if o.invoke_s > cut:
            continue
        if o.type == "ok" and o.complete_s > cut:
            o = Op(o.process, o.f, o.key, o.value, o.invoke_s, None, "info", None, o.error, o.index)
        out.append(o)
    return out


def _earliest_start(ops: list[Op], last: Op) -> float:
    """Ops that completed before this are not concurrent with ``last`` or the ops it
    overlaps; keep the ones that matter and the last value written before them."""
    start = last.invoke_s
    writes_before = [o for o in ops if o.type == "ok" and o.f != "read" and o.complete_s <= start]
    if writes_before:
        start = min(start, max(o.complete_s for o in writes_before))
    return start


@dataclass
class KeyVerdict:
    key: str
    verdict: str
    ops: int
    counterexample: list[Op] = field(default_factory=list)


def check(history: list[Op], model: str, budget_s: float) -> list[KeyVerdict]:
    """Each key of ``history`` checked on its own (registers are independent)."""
    by_key: dict[str, list[Op]] = {}
    for o in history:
        by_key.setdefault(o.key, []).append(o)
    deadline = time.monotonic() + budget_s
    out = []
    for key in sorted(by_key):
        ops = by_key[key]
        verdict = linearizable(ops, model, deadline)
        ce = counterexample(ops, model, deadline + budget_s) if verdict == INVALID else []
        out.append(KeyVerdict(key, verdict, len(ops), ce))
    return out


def overall(verdicts: list[KeyVerdict]) -> str:
    kinds = {v.verdict for v in verdicts}
    if INVALID in kinds:
        return INVALID
    if UNKNOWN in kinds:
        return UNKNOWN
    return VALID
