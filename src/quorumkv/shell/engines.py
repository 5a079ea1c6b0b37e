"""Choosing a storage engine by name (config ``storage``).

Above every engine module: ``storage_base.py`` (the engine interface),
``storage.py`` (SQLite), ``storage_memory.py`` and ``storage_redis.py`` (which build
on that interface) — so none imports another's factory and the imports run one way.
"""

from __future__ import annotations

import os

from .storage import SqliteEngine
from .storage_base import StorageEngine
from .storage_memory import MemoryEngine


def open_engine(kind: str, data_dir: str, *, fsync: bool = True, loop=None,
                redis_url: str | None = None) -> StorageEngine:
    if kind == "memory":
        return MemoryEngine()
    if kind == "sqlite":
        return SqliteEngine(os.path.join(data_dir, "kv.sqlite3"), fsync=fsync, loop=loop)
    if kind == "redis":
        from .storage_redis import REDIS_URL_DEFAULT, RedisEngine  # noqa: PLC0415 - redis-py only when used

        return RedisEngine(redis_url or REDIS_URL_DEFAULT, fsync=fsync, loop=loop)
    raise ValueError(f"unknown storage engine {kind!r} (choose sqlite, memory or redis)")
