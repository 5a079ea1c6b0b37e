"""Helpers for tests of quorumkv and of applications built on it."""

from __future__ import annotations

import itertools
import os

from .localcluster import ports_free

#: Listening ports for test clusters come from below the kernel's ephemeral range
#: (32768-60999 on Linux): a port in that range can be taken at any moment as the
#: source port of some outgoing connection, and the node that should listen there
#: would fail to start.
TEST_PORT_MIN = 20_000
TEST_PORT_MAX = 32_000
#: Each process walks its own stride of the range, so parallel test runs rarely meet.
_cursor = itertools.count((os.getpid() * 97) % (TEST_PORT_MAX - TEST_PORT_MIN))


def free_base_port(count: int) -> int:
    """A base port P such that P..P+count-1 are all free on 127.0.0.1 right now,
    outside the ephemeral port range."""
    span = TEST_PORT_MAX - TEST_PORT_MIN
    for _ in range(span // 16):
        base = TEST_PORT_MIN + (next(_cursor) * 16) % span
        if base + count < TEST_PORT_MAX and ports_free(base, count):
            # Skip past this block so the next call (and add_node's "max port + 1")
            # does not land on it.
            for _ in range((count + 16) // 16 + 2):
                next(_cursor)
            return base
    raise RuntimeError("no free port range found")
