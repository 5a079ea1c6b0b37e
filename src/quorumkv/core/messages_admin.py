"""Operator messages: authentication and snapshots (backup).

Tags 80-89 (frozen once released).

* ``Auth`` authenticates the connection it arrives on (native port): a client as one
  of the node's users, a peer as its internode user when mutual TLS is not in use.
  The answer is a ``Reply`` (``OK``, or ``INVALID`` with the reason); a refused
  ``Auth`` closes the connection.
* ``Snapshot`` asks the node for a consistent snapshot of its own storage under
  ``<data_dir>/snapshots/<tag>/`` (docs/operations.md, "Backup and restore");
  progress is in ``Status`` counters (``snapshot_*``), the result in ``SnapshotReply``.
"""

from __future__ import annotations

from .messages import _Msg


class Auth(_Msg, tag=80, frozen=True):
    id: int
    user: str
    password: str


class Snapshot(_Msg, tag=81, frozen=True):
    id: int
    tag: str


class SnapshotReply(_Msg, tag=82, frozen=True):
    id: int
    ok: bool
    message: str = ""
    node: str = ""
    path: str = ""  # the snapshot directory, on the node's host
    keys: int = 0
    bytes: int = 0
    taken_ms: int = 0  # wall-clock ms when the snapshot's point in time was fixed


ADMIN_REQUESTS: tuple[type[_Msg], ...] = (Auth, Snapshot)
ADMIN_RESPONSES: tuple[type[_Msg], ...] = (SnapshotReply,)
