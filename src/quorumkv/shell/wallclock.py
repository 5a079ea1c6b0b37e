"""The node's two clocks (milliseconds), shared by the runtime and its front ends.

``mono_ms``: the monotonic clock — every event's ``now_ms`` handed to the core, so
deadlines, timers and the failure detector do not jump when NTP or an operator
steps the wall clock. ``now_ms``: the wall clock (plus the test offset) — what the
core turns into HLC timestamps, TTLs and clock offsets (it is handed it on every
tick: ``NodeCore.observe_wall_clock``), and what the front ends report and use for
absolute expiry times.

Its own module so that ``server.py`` and the modules it loads (``resp_server``,
``antientropy``, ``metrics``) all read one clock without importing one another.
"""

from __future__ import annotations

import time

#: TEST ONLY (config ``clock_offset_ms``): added to the wall clock the core sees, so
#: one machine can run a node whose clock is off. One node per process, so global.
_clock_offset_ms = 0


def set_clock_offset_ms(offset_ms: int) -> None:
    global _clock_offset_ms
    _clock_offset_ms = offset_ms


def now_ms() -> int:
    """The wall clock in ms (plus the test offset)."""
    return int(time.time() * 1000) + _clock_offset_ms


def mono_ms() -> int:
    """The monotonic clock in ms (any base: only differences mean something)."""
    return int(time.monotonic() * 1000)
