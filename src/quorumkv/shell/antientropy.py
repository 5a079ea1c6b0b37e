"""Shell half of anti-entropy: its settings from the node's config.

The core half (``core/antientropy.py``) is installed on the node's core by
``server.py``; its effects (``ScanLocal``, ``ReadMany``, ``PurgeMany``, and
cleanup's ``DropMany``) are executed by the one runtime (``runtime/executor.py``)
against the storage engine like every other effect.
"""

from __future__ import annotations

from ..core.antientropy import AESettings
from .config import NodeConfig

__all__ = ["settings_from"]


def settings_from(config: NodeConfig, storage_purges: bool) -> AESettings:
    c = config
    return AESettings(interval_ms=c.ae_interval_ms, repair_per_s=c.ae_repair_per_s,
                      keys_per_message=c.ae_keys_per_message, gc=c.tombstone_gc and storage_purges,
                      gc_grace_ms=c.tombstone_gc_grace_ms)
