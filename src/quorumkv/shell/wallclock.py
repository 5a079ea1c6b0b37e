"""The node's wall clock (milliseconds), shared by the runtime and its front ends.

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
    return int(time.time() * 1000) + _clock_offset_ms
