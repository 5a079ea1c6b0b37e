"""Logging of a node: JSON lines only (structlog), repeated events rate-limited.

Every line is one JSON object with ``event``, ``level`` and ``timestamp``;
``log.exception`` puts the traceback in ``exception``; records of Python's own
``logging`` module (asyncio's "Task exception was never retrieved" ...) go through
the same renderer, and an exception that would end the process is logged as
``node_crashed`` before it does (``serve``).

Events that repeat while a condition lasts (a peer that stays unreachable makes a
``peer_down`` at every reconnect attempt) are logged at most once per
``LOG_REPEAT_WINDOW_MS`` per event and subject (the peer, target or client address);
the next line that gets through carries ``suppressed``: how many were dropped since.
"""

from __future__ import annotations

import logging
import sys
import time

import structlog

#: One line per (event, subject) per this long at most for the events below.
LOG_REPEAT_WINDOW_MS = 10_000
#: (event, subject) pairs remembered at most (forgotten all at once past it: a storm
#: of distinct subjects then logs one line each, never unbounded memory).
LOG_REPEAT_KEYS_MAX = 4_096
#: Rate-limited events and the field that names their subject.
RATE_LIMITED = {
    "peer_down": "peer", "peer_connected": "peer", "node_down": "peer", "node_suspect": "peer",
    "node_up": "peer", "bad_input": "peer", "resp_bad_input": "peer", "bad_peer_frame": "peer",
    "bad_peer_message": "peer", "hint_dropped": "target", "hint_store_failed": "target",
}


class RepeatLimiter:
    """A structlog processor: drops repeats of RATE_LIMITED events within the window."""

    def __init__(self, window_ms: int = LOG_REPEAT_WINDOW_MS, clock=time.monotonic) -> None:
        self.window_s = window_ms / 1000
        self.clock = clock
        self.seen: dict[tuple, list] = {}  # (event, subject) -> [last logged at, suppressed since]

    def __call__(self, logger, method_name, event_dict):
        event = event_dict.get("event")
        field = RATE_LIMITED.get(event) if isinstance(event, str) else None
        if field is None:
            return event_dict
        key = (event, str(event_dict.get(field)))
        now = self.clock()
        entry = self.seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            raise structlog.DropEvent
        if entry is not None and entry[1]:
            event_dict["suppressed"] = entry[1]
        if entry is None and len(self.seen) >= LOG_REPEAT_KEYS_MAX:
            self.seen.clear()
        self.seen[key] = [now, 0]
        return event_dict


def configure(level: str = "info") -> None:
    shared = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
    structlog.configure(
        processors=[*shared, RepeatLimiter(), structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        cache_logger_on_first_use=False,
    )
    # Python's own logging (asyncio, sqlite3 adapters, ...): the same JSON lines.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
