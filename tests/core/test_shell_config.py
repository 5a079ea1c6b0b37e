"""Node config validation: bad settings fail at load with a clear one-line error."""

from __future__ import annotations

import pytest

from quorumkv.shell.config import NodeConfig


def cfg(**kw) -> NodeConfig:
    return NodeConfig(node_id="n1", listen="127.0.0.1:7101", data_dir="/tmp/unused", **kw)


def test_defaults_keep_tombstone_gc_safe_from_hints():
    c = cfg()
    assert c.tombstone_gc_grace_ms > c.hint_age_ms_max + c.max_clock_skew_ms


@pytest.mark.parametrize("grace,age,skew", [(1_000, 500, 500), (1_000, 1_000, 0), (3_600_000, 3_600_000, 500)])
def test_a_grace_a_hint_could_outlive_is_refused_in_one_line(grace, age, skew):
    """Issue 10 (found by the simulator): grace == hint age was allowed, and a hint
    carrying a value older than a purged tombstone brought the key back."""
    with pytest.raises(ValueError) as err:
        cfg(tombstone_gc_grace_ms=grace, hint_age_ms_max=age, max_clock_skew_ms=skew)
    msg = str(err.value)
    assert "\n" not in msg and f"tombstone_gc_grace_ms={grace}" in msg and str(age + skew) in msg


def test_the_smallest_safe_grace_is_accepted_and_gc_off_needs_none():
    cfg(tombstone_gc_grace_ms=1_001, hint_age_ms_max=500, max_clock_skew_ms=500)
    cfg(tombstone_gc=False, tombstone_gc_grace_ms=1, hint_age_ms_max=500)


def test_a_hint_age_of_zero_is_refused():
    with pytest.raises(ValueError, match="hint_age_ms_max must be > 0"):
        cfg(hint_age_ms_max=0)


def test_config_defaults_are_the_cores_defaults():
    """One place for defaults: every setting the core's records also have takes the
    core's default, so the file format and the core cannot drift apart."""
    import dataclasses

    from quorumkv.core.antientropy import AESettings
    from quorumkv.core.hints import HintSettings
    from quorumkv.core.membership import DetectorSettings
    from quorumkv.core.node import NodeSettings

    cfg = {f.name: f.default for f in dataclasses.fields(NodeConfig)}
    pairs = {name: NodeSettings._field_defaults[name] for name in NodeSettings._field_defaults
             if name in cfg and name not in ("r", "w", "seeds", "tombstone_gc_grace_ms")}
    pairs.update({name: DetectorSettings._field_defaults[name] for name in DetectorSettings._fields if name in cfg})
    pairs.update({f"hint_{name}": v for name, v in HintSettings._field_defaults.items() if f"hint_{name}" in cfg})
    pairs.update({"ae_interval_ms": AESettings._field_defaults["interval_ms"],
                  "tombstone_gc_grace_ms": AESettings._field_defaults["gc_grace_ms"]})
    assert "timeout_ms_ring_sync" in pairs and "hint_age_ms_max" in pairs and len(pairs) >= 15
    assert {k: cfg[k] for k in pairs} == pairs


def test_timeout_ms_ring_sync_is_a_config_key(tmp_path):
    path = tmp_path / "n1.toml"
    path.write_text('node_id = "n1"\nlisten = "127.0.0.1:7101"\ndata_dir = "d"\ntimeout_ms_ring_sync = 750\n')
    assert NodeConfig.load(str(path)).timeout_ms_ring_sync == 750
    path.write_text('node_id = "n1"\nlisten = "127.0.0.1:7101"\ndata_dir = "d"\ntimeout_ms_ring_sync = 0\n')
    with pytest.raises(ValueError, match="timeout_ms_ring_sync must be > 0"):
        NodeConfig.load(str(path))
