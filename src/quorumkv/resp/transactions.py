"""MULTI/EXEC/DISCARD/WATCH/UNWATCH: refused, and refused *before anything runs*.

quorumkv has no multi-key atomic batch. Answering MULTI with an error is not enough:
a client pipelines ``MULTI, SET k v, EXEC`` in one write, and a server that refuses
only MULTI would run the SET and fail at EXEC ("ran half, failed at EXEC"). So once
MULTI is refused the connection refuses every command until EXEC or DISCARD, as
Redis does for a transaction with a queuing error (EXECABORT): nothing the client
meant as part of the transaction runs. Per-key atomic operations are available
instead: QKV.CAS, INCR/DECR, SETNX, GETDEL, SET NX/XX/GET (core/paxos.py).
"""

from __future__ import annotations

TRANSACTION_COMMANDS = frozenset({"multi", "exec", "discard", "watch", "unwatch"})

MULTI_REFUSED = ("ERR MULTI is not supported by quorumkv (no multi-key transactions); every command up to "
                 "EXEC/DISCARD on this connection is refused and not run. Use per-key atomic commands: "
                 "QKV.CAS, INCR/DECR, SETNX, GETDEL, SET NX/XX/GET")
NOT_RUN = "ERR command not run: this connection's MULTI was refused (send EXEC or DISCARD to leave it)"
EXEC_ABORT = "EXECABORT Transaction discarded: MULTI is not supported by quorumkv, nothing was run"


def refuse_transaction(name: str, session) -> str | None:
    """The error for ``name`` on ``session`` (None: run the command normally; "": reply +OK).
    MULTI enters the refused state; EXEC/DISCARD leave it."""
    if name == "multi":
        session.multi_refused = True
        return MULTI_REFUSED
    if name in ("exec", "discard"):
        was = session.multi_refused
        session.multi_refused = False
        if name == "exec":
            return EXEC_ABORT if was else "ERR EXEC without MULTI"
        return "ERR DISCARD without MULTI" if not was else ""  # "": +OK, the refused MULTI is left
    if session.multi_refused:
        return NOT_RUN
    if name in ("watch", "unwatch"):
        return (f"ERR {name.upper()} is not supported by quorumkv (no optimistic transactions); use QKV.CAS "
                "for a per-key compare-and-set")
    return None
