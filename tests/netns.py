"""Hosts for the real-process tests: network namespaces on one Linux machine.

``NetnsHosts`` makes a bridge in the root namespace and, per host, a namespace with
its own IP on that bridge, a loopback, and an ``/etc/hosts`` (``/etc/netns/NAME/hosts``,
which ``ip netns exec`` mounts over ``/etc/hosts``) naming every host, so commands
written for separate machines (``--listen n1:7100 --seed n2:7100``) run unchanged.
Processes run under ``ip netns exec``. ``partition(host)`` drops all of a host's
traffic with nftables, or — where ``nft`` is missing — with blackhole routes;
``heal(host)`` undoes it. ``close()`` kills what was started and deletes every
namespace, veth, the bridge and the hosts files, also after a failure.

Needs root and iproute2; ``unavailable()`` says why not, for ``pytest.skip``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys

#: Upper bound on one ip/nft command (they return in milliseconds).
CMD_TIMEOUT_S = 10


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    name = f"qkvprobe{secrets.token_hex(3)}"
    probe = _run("ip", "netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"ip netns add failed: {probe.stderr.strip()}"
    _run("ip", "netns", "del", name, check=False)
    return None


class NetnsHosts:
    def __init__(self, names: list[str]) -> None:
        self.token = secrets.token_hex(2)
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250) + 1}"
        self.bridge = f"qkb{self.token}"
        self.names = list(names)
        self.ip = {n: f"{self.subnet}.{i + 1}" for i, n in enumerate(names)}
        self.ns = {n: f"qkv{self.token}-{n}" for n in names}
        self.procs: dict[str, subprocess.Popen] = {}
        self.partitioned: dict[str, str] = {}  # host -> "nft" | "route"
        # QKV_NETNS_NO_NFT=1 tries the blackhole-route fallback where nft is installed.
        self.use_nft = shutil.which("nft") is not None and os.environ.get("QKV_NETNS_NO_NFT") != "1"

    # -- setup and teardown ---------------------------------------------------------
    def open(self) -> "NetnsHosts":
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            hosts = "127.0.0.1 localhost\n" + "".join(f"{ip} {n}\n" for n, ip in self.ip.items())
            for i, name in enumerate(self.names):
                ns, outer = self.ns[name], f"qkv{self.token}h{i}"
                _run("ip", "netns", "add", ns)
                os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
                with open(f"/etc/netns/{ns}/hosts", "w") as fh:
                    fh.write(hosts)
                _run("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _run("ip", "link", "set", outer, "master", self.bridge)
                _run("ip", "link", "set", outer, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.ip[name]}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        for i, name in enumerate(self.names):
            _run("ip", "netns", "del", self.ns[name], check=False)  # its veth end goes with it
            _run("ip", "link", "del", f"qkv{self.token}h{i}", check=False)
            shutil.rmtree(f"/etc/netns/{self.ns[name]}", ignore_errors=True)
        _run("ip", "link", "del", self.bridge, check=False)

    def __enter__(self) -> "NetnsHosts":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- processes -------------------------------------------------------------------
    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: str) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns[name], *argv], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)  # the session: ip netns exec and the node it runs
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=CMD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=CMD_TIMEOUT_S)

    # -- faults ------------------------------------------------------------------------
    def partition(self, name: str) -> str:
        """Drop every packet in and out of ``name`` (loopback aside); returns the means."""
        ns = self.ns[name]
        if self.use_nft:
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
                "table inet qkvpartition {\n"
                " chain input { type filter hook input priority 0; policy drop; iif \"lo\" accept; }\n"
                " chain output { type filter hook output priority 0; policy drop; oif \"lo\" accept; }\n"
                "}\n"))
            how = "nft"
        else:  # no nftables: more specific blackhole routes swallow everything the host sends
            for half in ("0/25", "128/25"):
                _run("ip", "-n", ns, "route", "add", "blackhole", f"{self.subnet}.{half}")
            how = "route"
        self.partitioned[name] = how
        return how

    def heal(self, name: str) -> None:
        how = self.partitioned.pop(name, None)
        ns = self.ns[name]
        if how == "nft":
            _run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "qkvpartition")
        elif how == "route":
            for half in ("0/25", "128/25"):
                _run("ip", "-n", ns, "route", "del", "blackhole", f"{self.subnet}.{half}")


def compose_command(service: dict, compose_dir, named_volume_dir) -> list[str]:
    """A compose service's command with the container paths of its volumes mapped to
    host paths: a bind mount (``./quorumkv.toml:/etc/...``) to the file next to the
    compose file, a named volume (``n1-data:/data``) to ``named_volume_dir``. Nothing
    else is changed."""
    mapping = {}
    for vol in service.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if src.startswith((".", "/")):
            mapping[dst] = str((compose_dir / src).resolve())
        else:
            mapping[dst] = str(named_volume_dir)
    return [mapping.get(arg, arg) for arg in service["command"]]
