"""Effects: what the core asks the shell to do (see ``node.py`` for the table)."""

from __future__ import annotations

from typing import Any, NamedTuple

from .version import Record


class Send(NamedTuple):
    peer: str
    msg: object


class Respond(NamedTuple):
    conn: object
    msg: object


class StoreWrite(NamedTuple):
    token: object
    key: bytes
    record: Record


class StoreRead(NamedTuple):
    token: object
    key: bytes


class StoreHint(NamedTuple):
    token: object
    owner: str
    key: bytes
    record: Record
    created_ms: int


class ReadHint(NamedTuple):
    token: object
    key: bytes


class Peek(NamedTuple):
    token: object
    key: bytes


class LoadHints(NamedTuple):
    owner: str
    limit: int


class DeleteHint(NamedTuple):
    hint_id: object


class SaveMembers(NamedTuple):
    """Durably record what this node knows of every other node — node -> (address,
    generation, version, status), joined, joining, leaving, replaced and departed
    members alike — replacing the previous table; read back at start and passed to
    ``NodeCore(known=...)``. A restarted node then routes by the ring it knew, not
    by its config file (docs/ring-changes.md, "Restarts"). Emitted when an address,
    generation or status changes (nothing to acknowledge: the node acts on it at
    once either way)."""

    members: dict[str, Any]


class SaveBootstrapped(NamedTuple):
    """Durably record that this node's join or replace has streamed its data and it
    is a member: a restart must come back ``up`` with these ``members`` (node ->
    address), not join or replace again (``node-state.json`` in the shell). Emitted
    once, just before the ``join_completed`` / ``replace_completed`` log; nothing
    waits on it (the node is a member at once either way)."""

    members: dict[str, str]


class Log(NamedTuple):
    level: str
    event: str
    fields: dict[str, Any]


class ScanRange(NamedTuple):
    """Up to ``limit`` records with key > ``after`` (None: from the start), in key
    order; report ``on_store_done(token, True, [(key, record), ...])``."""

    token: object
    after: bytes | None
    limit: int


class SaveHlcCeiling(NamedTuple):
    """Durably record ``ts`` as the HLC ceiling (no timestamp above it has been
    issued; a restart starts the HLC there), *then* ``on_store_done(token, ok,
    None)``. The core issues nothing above the last saved ceiling (core/clock.py)."""

    token: object
    ts: int
