"""Shell half of anti-entropy: installs ``core.antientropy`` on a node's core and
executes its effects against the storage engine.

* ``ScanLocal``: one iterator over ``storage.scan_all()`` per scan token; each
  effect takes the next ``limit`` records and hands them to the core from the
  event loop's next turn (``call_soon``), so a scan of any size runs in chunks
  with client traffic in between. SQLite's ``scan_all`` pages by key, so no read
  snapshot stays open between chunks.
* ``ReadMany``: synchronous ``get_now`` per key (as ``Peek`` does).
* ``PurgeMany``: the engine's compare-and-delete ``purge`` per entry; the count of
  purges applied goes back to the core once all are durable. ``DropMany``
  (``core/cleanup.py``) the same with the engine's ``drop``.
"""

from __future__ import annotations

import itertools

from ..core.antientropy import AE_EFFECTS as _CORE_AE_EFFECTS
from ..core.antientropy import AESettings, PurgeMany, ReadMany, ScanLocal, install
from ..core.cleanup import DropMany
from .config import NodeConfig
from .wallclock import now_ms

#: Storage-scan effects this module executes (cleanup's DropMany shares the purge path).
AE_EFFECTS = _CORE_AE_EFFECTS + (DropMany,)

__all__ = ["AE_EFFECTS", "AntiEntropyShell", "settings_from"]


def settings_from(config: NodeConfig, storage_purges: bool) -> AESettings:
    c = config
    return AESettings(interval_ms=c.ae_interval_ms, repair_per_s=c.ae_repair_per_s,
                      keys_per_message=c.ae_keys_per_message, gc=c.tombstone_gc and storage_purges,
                      gc_grace_ms=c.tombstone_gc_grace_ms)


class AntiEntropyShell:
    def __init__(self, server, now_ms: int) -> None:
        self.server = server
        self.storage = server.storage
        self.core = server.core
        self.ae = install(self.core, settings_from(server.config, self.storage.supports_purge), now_ms)
        self._scans: dict = {}  # token -> iterator

    def execute(self, eff) -> None:
        t = type(eff)
        if t is ScanLocal:
            self._scan(eff.token, eff.limit)
        elif t is ReadMany:
            self.server._sync_done(eff.token, lambda keys=eff.keys: [self.storage.get_now(k) for k in keys])
        elif t is PurgeMany:
            self._purge(eff.token, eff.entries, self.storage.purge)
        elif t is DropMany:
            self._purge(eff.token, eff.entries, self.storage.drop)

    def _scan(self, token, limit: int) -> None:
        if limit <= 0:
            self._scans.pop(token, None)
            return
        it = self._scans.get(token)
        if it is None:
            it = self._scans[token] = iter(self.storage.scan_all())
        try:
            chunk = list(itertools.islice(it, limit))
        except Exception as exc:  # storage error mid-scan: the core fails the session
            self._scans.pop(token, None)
            self.server.loop.call_soon(self._deliver, token, False, f"storage error: {exc}")
            return
        last = len(chunk) < limit
        if last:
            self._scans.pop(token, None)
        self.server.loop.call_soon(self._deliver, token, True, (chunk, last))

    def _deliver(self, token, ok: bool, result) -> None:
        self.server.run(self.core.on_store_done(token, ok, result, now_ms()))

    def _purge(self, token, entries: list, delete) -> None:
        left = [len(entries), 0, ""]  # outstanding, purged, first error

        def done(ok, result):
            left[0] -= 1
            if ok:
                left[1] += 1 if result is None else int(bool(result))
            elif not left[2]:
                left[2] = str(result)
            if left[0] == 0:
                self._deliver(token, not left[2], left[2] or left[1])

        if not entries:
            self.server.loop.call_soon(self._deliver, token, True, 0)
        for key, version in entries:
            delete(key, version, done)
