"""Anti-entropy repairs typed records whose states differ under one version (issue 15)."""

from __future__ import annotations

from test_core_antientropy import FAST, T0, Net

from quorumkv.core import crdt, typed
from quorumkv.core.version import Version, pack_ts


class MergingNet(Net):
    """The test network's storage with the engines' rule: ``core.typed.resolve``."""

    def apply_write(self, nid, key, rec):
        keep, _newer = typed.resolve(self.store[nid].get(key), rec)
        if keep is not None:
            self.store[nid][key] = keep


def test_repair_merges_sets_that_differ_under_the_same_version():
    net = MergingNet(FAST)
    key = b"cart"
    primaries = net.primaries(key)
    version = Version(pack_ts(T0, 0), "n1")
    for i, p in enumerate(primaries):  # each primary saw a different add, same version
        state = crdt.set_add(crdt.ORSet(), p, [f"item-from-{p}".encode()])
        net.put(p, key, typed.typed_record(version, typed.SET, state))
    assert len({net.store[p][key].version.ctx["h"] for p in primaries}) == 3
    for p in primaries:
        net.repair(p)
    want = sorted(f"item-from-{p}".encode() for p in primaries)
    for p in primaries:
        rec = net.store[p][key]
        assert crdt.set_members(typed.decode(typed.SET, rec.value)) == want, p
        assert rec.version.key() == version.key()
    assert len({net.store[p][key].version.ctx["h"] for p in primaries}) == 1
