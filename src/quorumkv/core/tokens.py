"""Storage-token kinds, in one table.

Every storage effect carries a *token*, a tuple the shell hands back unchanged with
the result (``NodeCore.on_store_done(token, ok, result)``); ``token[0]`` is its
kind, and the core routes the completion by it (``NodeCore.handle_stored`` for the
extensions, ``on_store_done`` itself for the replica's own). A ``StrEnum``: a kind
is its string, so tokens compare, hash and log exactly as before.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique  # two kinds sharing a tag would route one's completions to the other
class StoreKind(StrEnum):
    # the replica (core/node.py) -- token (kind, conn, request id[, owner])
    WRITE = "w"  # RepWrite stored: answer RepWriteAck
    READ = "r"  # RepRead: answer RepReadResp
    PEEK = "p"  # inspect's peek of a record and its hints
    HINT_WRITE = "hw"  # a hint stored for a replica that is down, acked as a write
    HINT = "h"  # a hint the coordinator keeps for itself (nobody waits)
    # extensions -- each registers its kinds with NodeCore.handle_stored
    CLOCK = "c"  # the HLC ceiling saved (core/clock.py)
    AE = "ae"  # anti-entropy and tombstone GC (core/antientropy.py, AeToken)
    STREAM_SOURCE = "sr"  # a ring change's source scanned a batch (core/ringchange.py)
    STREAM_WRITE = "sw"  # a streamed record stored by the joining node
    DECOMMISSION_SCAN = "ds"  # a leaving node scanned what it hands over
    CLEANUP_SCAN = "cs"  # cleanup scanned for leftovers (core/cleanup.py)
    CLEANUP_DROP = "cd"  # cleanup dropped leftovers
    PAXOS_READ = "xr"  # acceptor: a linearizable read (core/paxos_acceptor.py)
    PAXOS_PREPARE = "xp"  # acceptor: phase 1
    PAXOS_ACCEPT = "xa"  # acceptor: phase 2
    SCAN_KEYS = "sk"  # a key scan (core/scan.py)
    TYPED = "ty"  # typed values' read-modify-write (core/typed_coord.py)

