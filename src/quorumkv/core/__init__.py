"""The pure protocol core of quorumkv.

Everything in this package is deterministic: it imports only the standard library
(never asyncio, socket, time, os, random, threading, subprocess or sqlite3) and
msgspec. Time and randomness arrive as arguments. The I/O shell (``quorumkv.shell``)
and the simulator drive the very same objects. ``tests/core/test_core_purity.py`` enforces
the boundary.
"""
