"""Client-side quorum reads and writes over N independent, plain Redis servers.

This is the seed article's own architecture — an application that reads and writes
"5 nodes, quorum 3" through Redis — done properly. No quorumkv node runs: the client
is the coordinator (Dynamo's "client-driven" coordination).

* **N servers, N failure domains.** Each URL is a separate ``redis-server``; a key is
  stored once on every server (the seed stored ``key:0`` .. ``key:4`` on *one* server).
* **Parallel.** A request goes to all N servers at once and is judged as replies
  arrive (``quorumkv.core.quorum.QuorumRound``, the same code a quorumkv node uses):
  it returns as soon as R (W) servers succeeded, fails at once when too many servers
  are unreachable, and fails at ``timeout_ms`` when servers stay silent (a paused or
  overloaded server is skipped, not waited for).
* **Versions.** Every write carries a hybrid-logical-clock timestamp and this
  client's id as tie-break (``Version(ts, client_id)``), stored beside the value; each
  server applies a write only if it is newer than what it holds — atomically, in the
  Lua script the Redis storage engine uses (same layout, ``core/redis_layout.py``:
  ``qkv:d:<key>`` hashes).
  So a late or retried write never overwrites a newer one, and a read can tell new
  from stale.
* **Values, not booleans.** ``get`` returns the newest value among R replies (or
  raises ``NotFoundError``); a delete is a tombstone version, so it cannot be undone
  by a stale server.
* **Read repair.** Servers that answered a read with an older version (or nothing)
  are sent the newest record — in the background by default (``read_repair="async"``),
  before the read returns with ``"sync"``, or not at all with ``"off"``. Late replies
  that arrive before the deadline are repaired too.
* **Clear errors.** ``UnavailableError: write needed 3 acks, at most 2 possible
  (127.0.0.1:6381 unreachable, 127.0.0.1:6382 unreachable, 127.0.0.1:6383 unreachable)``
  or ``QuorumTimeoutError: read needed 3 replies, got 2 (127.0.0.1:6380 timed out)``.
  A failed write is not rolled back (it may have landed on some servers), exactly as
  in quorumkv itself; retrying it is safe.

``AsyncQuorumRedis`` is the asyncio client; ``QuorumRedis`` is the blocking twin,
which drives an ``AsyncQuorumRedis`` on a private event loop in a background thread
(so background repairs keep running between calls).

Not provided: Redis Cluster (the three keys a write touches must live on one
server), garbage collection of tombstones and expired records, hinted handoff.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
import warnings
from urllib.parse import urlparse

import redis.asyncio as aredis
from redis.asyncio.retry import Retry  # the asyncio one: redis.retry.Retry would not retry here
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..client.base import Item, to_bytes
from ..core.consistency import quorum_of, resolve, weak_warning
from ..core.quorum import PENDING, WON, QuorumRound
from ..core.status import Status, raise_for_status
from ..core.redis_layout import KEY_PREFIX_DEFAULT, WRITE_IF_NEWER_LUA, WRITE_IF_NEWER_SHA, RedisLayout, decode_record
from ..core.validation import validate_key, validate_value
from ..core.version import HLC, Record, Version
from ..errors import ConsistencyWarning, InvalidRequestError, NotFoundError

#: Deadline of one get/put/delete (and of the repairs a read triggers).
TIMEOUT_MS_DEFAULT = 1_000
#: Open connections per server at most; an operation waits for a free one within its
#: own deadline (a paused server holds its connections until then).
CONNECTIONS_PER_SERVER_MAX = 64
#: Background repairs/trailing replies awaited by ``close()`` at most this long.
CLOSE_DRAIN_MS = 2_000
#: Reconnect-and-resend attempts after a connection error (a server that restarted).
RECONNECT_RETRIES = 1

READ_REPAIR_MODES = ("async", "sync", "off")
_MISSING = object()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _server_name(url: str) -> str:
    parsed = urlparse(url if "://" in url else f"redis://{url}")
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise InvalidRequestError(f"bad Redis URL {url!r}: expected redis://HOST:PORT[/DB]")
    db = parsed.path.strip("/")
    name = f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"
    return f"{name}/{db}" if db not in ("", "0") else name


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (RedisTimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, RedisConnectionError):
        return "unreachable"
    return f"failed: {exc}"


class AsyncQuorumRedis:
    """Quorum reads/writes over independent Redis servers, coordinated by this client."""

    def __init__(self, urls, *, r: int | str = "QUORUM", w: int | str = "QUORUM",
                 timeout_ms: int = TIMEOUT_MS_DEFAULT, client_id: str | None = None,
                 read_repair: str = "async", prefix: bytes = KEY_PREFIX_DEFAULT) -> None:
        if isinstance(urls, str):
            urls = [urls]
        urls = [u if "://" in u else f"redis://{u}" for u in urls]
        if not urls:
            raise InvalidRequestError("no Redis servers given")
        self.names = tuple(_server_name(u) for u in urls)
        if len(set(self.names)) != len(self.names):
            raise InvalidRequestError(f"the same Redis server is listed twice in {list(self.names)}: "
                                      "each replica must be its own server (its own failure domain)")
        self.n = len(urls)
        self.r = resolve(r, self.n, quorum_of(self.n), "R")
        self.w = resolve(w, self.n, quorum_of(self.n), "W")
        if timeout_ms <= 0:
            raise InvalidRequestError("timeout_ms must be > 0")
        if read_repair not in READ_REPAIR_MODES:
            raise InvalidRequestError(f"read_repair must be one of {READ_REPAIR_MODES}, not {read_repair!r}")
        self.timeout_ms = timeout_ms
        self.read_repair = read_repair
        self.client_id = client_id or f"c-{secrets.token_hex(4)}"
        self.hlc = HLC()
        self.layout = RedisLayout(prefix)
        self._clients = {}
        for name, url in zip(self.names, urls):
            pool = aredis.BlockingConnectionPool.from_url(
                url, max_connections=CONNECTIONS_PER_SERVER_MAX, timeout=timeout_ms / 1000,
                socket_timeout=timeout_ms / 1000, socket_connect_timeout=timeout_ms / 1000,
                retry=Retry(NoBackoff(), RECONNECT_RETRIES),
            )
            self._clients[name] = aredis.Redis(connection_pool=pool)
        self._background: set[asyncio.Task] = set()
        self._emit_warnings = True  # QuorumRedis warns on its caller's thread instead
        self.stats = {"repairs": 0}

    # -- public API -----------------------------------------------------------------
    async def put(self, key, value, *, w: int | str | None = None, ttl_ms: int | None = None) -> Version:
        """Write ``value`` with a new version; returns the version written."""
        v = None if value is None else to_bytes(value, "value")
        validate_value(v)
        if ttl_ms is not None and (isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0):
            raise InvalidRequestError(f"ttl_ms must be a positive integer, not {ttl_ms!r}")
        return await self._write(key, v, w, ttl_ms)

    set = put  # Redis spelling

    async def delete(self, key, *, w: int | str | None = None) -> Version:
        """Write a tombstone (a delete is a version, so a stale server cannot undo it)."""
        return await self._write(key, None, w, None)

    async def get(self, key, *, r: int | str | None = None, default=_MISSING) -> bytes:
        item = await self.get_item(key, r=r)
        if item.value is None:
            if default is not _MISSING:
                return default
            raise NotFoundError(f"not found: {key!r}")
        return item.value

    async def get_item(self, key, *, r: int | str | None = None) -> Item:
        """The newest version among R replies (``value`` None: missing, deleted or expired)."""
        k = self._key(key)
        needed = self._level(r, self.r, "R")
        rnd, pending, deadline = await self._round("read", needed, lambda cli: self._read_one(cli, k))
        rec = rnd.result()
        now = _now_ms()
        if rec is not None:
            self.hlc.observe(rec.version.ts, now)
        if self.read_repair != "off":
            stale = self._stale(rnd, rec)
            if stale and self.read_repair == "sync":
                await self._repair(k, rec, stale, deadline)
            elif stale:
                self._spawn(self._repair(k, rec, stale, deadline))
        self._finish_in_background(rnd, pending, deadline, k if self.read_repair != "off" else None)
        if rec is None:
            return Item(None, None)
        live = rec.live_at(now)
        return Item(rec.value if live else None, rec.version, rec.expires_ms)

    async def inspect(self, key) -> dict[str, Record | None | str]:
        """What each server holds for ``key`` right now (a record, None, or an error)."""
        k = self._key(key)
        names = list(self._clients)
        results = await asyncio.gather(*(asyncio.wait_for(self._read_one(self._clients[nm], k),
                                                          self.timeout_ms / 1000) for nm in names),
                                       return_exceptions=True)
        return {nm: (_reason(res) if isinstance(res, BaseException) else res) for nm, res in zip(names, results)}

    async def drain(self, timeout_ms: int | None = None) -> None:
        """Wait for background work (read repairs, trailing replies) to finish."""
        limit = (timeout_ms if timeout_ms is not None else CLOSE_DRAIN_MS) / 1000
        deadline = time.monotonic() + limit
        while self._background:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(set(self._background), timeout=left)

    async def close(self) -> None:
        await self.drain()
        for task in list(self._background):
            task.cancel()
        for cli in self._clients.values():
            await cli.aclose()

    async def __aenter__(self) -> "AsyncQuorumRedis":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- rounds -----------------------------------------------------------------------
    def _key(self, key) -> bytes:
        k = to_bytes(key, "key")
        validate_key(k)
        return k

    def _level(self, level, default: int, what: str, *, stacklevel: int = 4) -> int:
        """Resolve a per-request R or W; warn (ConsistencyWarning) when R + W <= N."""
        count = resolve(level, self.n, default, what)
        if self._emit_warnings or stacklevel != 4:
            other = self.w if what == "R" else self.r
            warning = weak_warning(count, other, self.n) if what == "R" else weak_warning(other, count, self.n)
            if warning:
                warnings.warn(warning, ConsistencyWarning, stacklevel=stacklevel)
        return count

    async def _round(self, kind: str, needed: int, make):
        """Send to every server at once; judge replies as they come; stop when decided.

        Each reply is judged in its task's done-callback; the caller wakes once, when
        the round is decided (won, lost, or the deadline timer fired).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_ms / 1000
        rnd = QuorumRound(kind, self.names, needed)
        decided = loop.create_future()

        def judge(task: asyncio.Task, name: str) -> None:
            if decided.done() or task.cancelled():
                return  # after the decision: the background finisher looks at it
            self._judge(rnd, name, task)
            if rnd.status != PENDING:
                decided.set_result(None)

        tasks = {}
        for nm in self.names:
            task = asyncio.ensure_future(make(self._clients[nm]))
            task.add_done_callback(lambda t, nm=nm: judge(t, nm))
            tasks[task] = nm
        timer = loop.call_at(deadline, lambda: decided.done() or decided.set_result(None))
        try:
            await decided
        finally:
            timer.cancel()
            if not decided.done():  # the caller was cancelled
                decided.cancel()
                for task in tasks:
                    task.cancel()
        pending = {t: nm for t, nm in tasks.items() if not rnd._answered(nm)}
        if rnd.status == PENDING:
            rnd.expire()
        if rnd.status != WON:
            for task in pending:
                task.cancel()
            msg = rnd.error_message()
            raise_for_status(Status.TIMEOUT if rnd.timed_out else Status.UNAVAILABLE, msg)  # the one status -> error map
        return rnd, pending, deadline

    @staticmethod
    def _judge(rnd: QuorumRound, name: str, task: asyncio.Task) -> None:
        exc = task.exception()
        if exc is not None:
            rnd.add_failure(name, _reason(exc))
        else:
            rnd.add_ok(name, task.result())

    def _finish_in_background(self, rnd, pending: dict, deadline: float, repair_key: bytes | None) -> None:
        """Replies still on their way after the decision: let them run until the deadline
        (writes keep replicating to every server), then cancel; for reads, once they
        are all in, repair the servers that turn out stale. Callbacks, not a task per
        operation: this runs for nearly every write (W < N)."""
        if not pending:
            return
        loop = asyncio.get_running_loop()
        left = [len(pending)]

        def cancel_late() -> None:
            for task in pending:
                task.cancel()

        timer = loop.call_at(deadline, cancel_late)

        def one_done(task: asyncio.Task) -> None:
            self._background.discard(task)
            if not task.cancelled():
                task.exception()  # retrieved: no "exception never retrieved" log
            left[0] -= 1
            if left[0] == 0:
                timer.cancel()
                if repair_key is not None:
                    self._repair_late(rnd, pending, repair_key)

        for task in pending:
            self._background.add(task)
            task.add_done_callback(one_done)

    def _repair_late(self, rnd, pending: dict, key: bytes) -> None:
        late = {nm: t.result() for t, nm in pending.items() if not t.cancelled() and t.exception() is None}
        decided = rnd.result()
        newest = decided
        for rec in late.values():
            if rec is not None and (newest is None or rec.version.newer_than(newest.version)):
                newest = rec
        # A late reply newer than the decision: every server that answered is a
        # candidate; otherwise the decided ones were handled already.
        candidates = late if newest is decided else {**rnd.records, **late}
        stale = [nm for nm, rec in candidates.items()
                 if newest is not None and (rec is None or newest.version.newer_than(rec.version))]
        if stale:
            self._spawn(self._repair(key, newest, stale, asyncio.get_running_loop().time() + self.timeout_ms / 1000))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- one server ---------------------------------------------------------------------
    async def _read_one(self, cli, key: bytes) -> Record | None:
        return decode_record(await cli.execute_command("HGETALL", self.layout.data_key(key)))

    async def _write_one(self, cli, key: bytes, record: Record) -> int:
        cmd = self.layout.write_command(WRITE_IF_NEWER_SHA, key, record)
        try:
            return await cli.execute_command(*cmd)
        except NoScriptError:  # first use of this server, or it restarted: load, resend
            await cli.script_load(WRITE_IF_NEWER_LUA)
            return await cli.execute_command(*cmd)

    async def _write(self, key, value: bytes | None, w, ttl_ms: int | None) -> Version:
        k = self._key(key)
        needed = self._level(w, self.w, "W")
        now = _now_ms()
        version = Version(self.hlc.now(now), self.client_id)
        record = Record(version, value, now + ttl_ms if ttl_ms else 0)
        _, pending, deadline = await self._round("write", needed, lambda cli: self._write_one(cli, k, record))
        self._finish_in_background(None, pending, deadline, None)
        return version

    @staticmethod
    def _stale(rnd: QuorumRound, newest: Record | None) -> list[str]:
        if newest is None:
            return []
        return [nm for nm, rec in rnd.records.items() if rec is None or newest.version.newer_than(rec.version)]

    async def _repair(self, key: bytes, record: Record, names: list[str], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        coros = [self._write_one(self._clients[nm], key, record) for nm in names]
        try:
            results = await asyncio.wait_for(asyncio.gather(*coros, return_exceptions=True),
                                             max(0.001, deadline - loop.time()))
        except asyncio.TimeoutError:
            return  # best effort: the next read repairs again
        self.stats["repairs"] += sum(1 for res in results if res == 1)



class QuorumRedis:
    """Blocking twin of ``AsyncQuorumRedis`` (same arguments and methods).

    Runs an ``AsyncQuorumRedis`` on a private event loop in a daemon thread: requests
    are still sent to all servers in parallel, and background read repairs progress
    between calls. Thread-safe: several threads may call it at once.
    """

    _ids = itertools.count(1)

    def __init__(self, urls, **kwargs) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"quorum-redis-{next(self._ids)}")
        self._thread.start()
        try:
            self._async = self._call(self._make(urls, kwargs))
            self._async._emit_warnings = False
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(urls, kwargs) -> AsyncQuorumRedis:
        return AsyncQuorumRedis(urls, **kwargs)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name):  # r, w, n, names, client_id, hlc, stats, timeout_ms, ...
        if name == "_async":
            raise AttributeError(name)
        return getattr(self._async, name)

    def put(self, key, value, *, w=None, ttl_ms=None) -> Version:
        self._async._level(w, self._async.w, "W", stacklevel=3)
        return self._call(self._async.put(key, value, w=w, ttl_ms=ttl_ms))

    set = put

    def delete(self, key, *, w=None) -> Version:
        self._async._level(w, self._async.w, "W", stacklevel=3)
        return self._call(self._async.delete(key, w=w))

    def get(self, key, *, r=None, default=_MISSING) -> bytes:
        self._async._level(r, self._async.r, "R", stacklevel=3)
        return self._call(self._async.get(key, r=r, default=default))

    def get_item(self, key, *, r=None) -> Item:
        self._async._level(r, self._async.r, "R", stacklevel=3)
        return self._call(self._async.get_item(key, r=r))

    def inspect(self, key) -> dict:
        return self._call(self._async.inspect(key))

    def drain(self, timeout_ms: int | None = None) -> None:
        self._call(self._async.drain(timeout_ms))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._async.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> "QuorumRedis":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["AsyncQuorumRedis", "QuorumRedis", "TIMEOUT_MS_DEFAULT", "CONNECTIONS_PER_SERVER_MAX"]
