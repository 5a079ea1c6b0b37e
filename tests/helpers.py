"""Small helpers shared by the real-process tests."""

from __future__ import annotations

import time

import pytest

POLL_S = 0.05


def wait_for(cond, timeout_s: float, what: str, detail=None):
    """Poll ``cond`` until it returns a truthy value; fail with ``what`` (and
    ``detail()``, when given, to show the last state seen) after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f" (last seen: {detail()})" if detail is not None else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}{extra}")
        time.sleep(POLL_S)
