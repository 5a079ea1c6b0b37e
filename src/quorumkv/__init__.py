"""quorumkv: a leaderless, quorum-replicated key-value store.

Names are imported lazily (PEP 562) so that ``import quorumkv.core`` — used by the
simulator and by tests of the pure core — does not drag in the client's asyncio and
socket modules.
"""

from __future__ import annotations

import importlib

ONE = "ONE"
QUORUM = "QUORUM"
ALL = "ALL"

__version__ = "0.1.0"

_LAZY = {
    "Client": "client", "AsyncClient": "client", "Item": "client", "DEFAULT": "client",
    "QuorumKVError": "errors", "InvalidRequestError": "errors", "NotFoundError": "errors",
    "UnavailableError": "errors", "QuorumTimeoutError": "errors", "OverloadedError": "errors",
    "ProtocolError": "errors", "ConnectionFailedError": "errors", "ConsistencyWarning": "errors",
    "PeerFaultError": "errors", "RefusedError": "errors", "QuorumNotMetError": "errors",
    "Target": "core.dynamic",
    "Siblings": "client", "SiblingsError": "client",
}

__all__ = ["ALL", "ONE", "QUORUM", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quorumkv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
