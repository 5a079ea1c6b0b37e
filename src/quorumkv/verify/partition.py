"""Network partitions between the nodes of a local cluster, for ``quorumkv verify``.

Every node of the cluster listens on its own IPv4 loopback address (all of 127/8 is
loopback on Linux; a node's peer links connect *from* its own address, see
``shell/server.py``'s ``_loopback_source``), so one node's traffic to another can be
told apart by its source and destination address. A partition drops every packet
between addresses on different sides with nftables: one table per run
(``inet qkvverify_<token>``) whose ``output`` chain (every loopback packet is
locally generated, so it passes there) holds ``ip saddr A ip daddr B drop`` rules;
``heal()`` flushes the chain, ``close()`` deletes the table. Clients connect from
127.0.0.1, which no rule names: a client keeps talking to its own node, whichever
side that node is on (Jepsen's model: the client lives with its node).

Where ``nft`` is missing, iptables is used the same way (a chain of its own, jumped to
from OUTPUT). Blackhole routes and ``ip rule`` cannot do it: the kernel's ``local``
table answers for 127/8 before any of them is consulted.

Needs root on Linux; ``unavailable()`` says why not.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import sys

#: Upper bound on one nft / iptables command (they return in milliseconds).
CMD_TIMEOUT_S = 10
TABLE_PREFIX = "qkvverify_"


def _run(argv: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def backend() -> str | None:
    """``nft``, ``iptables`` or None; ``QKV_VERIFY_NO_NFT=1`` skips nft (to try the fallback)."""
    if shutil.which("nft") and os.environ.get("QKV_VERIFY_NO_NFT") != "1":
        return "nft"
    if shutil.which("iptables"):
        return "iptables"
    return None


def unavailable() -> str | None:
    """Why partitions cannot be made on this machine, or None."""
    if sys.platform != "linux":
        return "network partitions need Linux (nftables or iptables)"
    if os.geteuid() != 0:
        return "network partitions need root (they add nftables/iptables rules)"
    how = backend()
    if how is None:
        return "network partitions need nft (nftables) or iptables; neither is installed"
    probe = f"{TABLE_PREFIX}probe{secrets.token_hex(3)}"
    if how == "nft":
        made = _run(["nft", "add", "table", "inet", probe], check=False)
        if made.returncode != 0:
            return f"nft cannot add a table here: {made.stderr.strip() or made.returncode}"
        _run(["nft", "delete", "table", "inet", probe], check=False)
    else:
        listed = _run(["iptables", "-S", "OUTPUT"], check=False)
        if listed.returncode != 0:
            return f"iptables cannot be used here: {listed.stderr.strip() or listed.returncode}"
    return None


def loopback_hosts(count: int, rng) -> list[str]:
    """``count`` loopback addresses in a /24 of 127/8 drawn from ``rng`` (away from
    127.0.0.x, which everything else uses), one per node."""
    if not 1 <= count <= 250:
        raise ValueError("1 to 250 nodes")
    a, b = rng.randrange(64, 250), rng.randrange(1, 250)
    return [f"127.{a}.{b}.{i + 1}" for i in range(count)]


def node_hosts(addresses: dict[str, str]) -> str | None:
    """Why these node addresses (id -> HOST:PORT) cannot be partitioned apart, or None:
    each node needs its own IPv4 loopback address."""
    hosts = [a.rsplit(":", 1)[0] for a in addresses.values()]
    try:
        ips = [ipaddress.ip_address(h) for h in hosts]
    except ValueError:
        return "partitions need nodes listening on IPv4 loopback addresses, not host names"
    if not all(ip.version == 4 and ip.is_loopback for ip in ips):
        return "partitions need nodes listening on IPv4 loopback addresses (127.x.y.z)"
    if len(set(ips)) != len(ips):
        return ("partitions need every node on its own address (127.0.0.2, 127.0.0.3, ...); "
                "let verify start its own cluster (no --dir)")
    return None


class Partitioner:
    """Cuts and heals a cluster whose nodes have distinct loopback addresses."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = dict(hosts)  # node id -> its IPv4 loopback address
        self.how = backend()
        self.name = f"{TABLE_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
        self.chain = f"QKVV{secrets.token_hex(4)}"  # iptables chain names: 28 characters at most
        self.opened = False
        self.cut_now: list[list[str]] | None = None

    def open(self) -> "Partitioner":
        if self.how == "nft":
            _run(["nft", "-f", "-"], input=(
                f"table inet {self.name} {{\n"
                " chain output { type filter hook output priority 0; policy accept; }\n"
                "}\n"))
        elif self.how == "iptables":
            _run(["iptables", "-N", self.chain])
            _run(["iptables", "-I", "OUTPUT", "-j", self.chain])
        else:
            raise RuntimeError(unavailable() or "no nft or iptables")
        self.opened = True
        return self

    def cut(self, sides: list[list[str]]) -> None:
        """Drop every packet between nodes on different ``sides`` (lists of node ids)."""
        self.heal()
        pairs = [(self.hosts[a], self.hosts[b]) for i, side in enumerate(sides) for other in sides[i + 1:]
                 for a in side for b in other]
        if self.how == "nft":
            rules = "".join(f"add rule inet {self.name} output ip saddr {a} ip daddr {b} drop\n"
                            f"add rule inet {self.name} output ip saddr {b} ip daddr {a} drop\n" for a, b in pairs)
            _run(["nft", "-f", "-"], input=rules)
        else:
            for a, b in pairs:
                for src, dst in ((a, b), (b, a)):
                    _run(["iptables", "-A", self.chain, "-s", src, "-d", dst, "-j", "DROP"])
        self.cut_now = [list(s) for s in sides]

    def heal(self) -> None:
        if self.cut_now is None:
            return
        if self.how == "nft":
            _run(["nft", "flush", "chain", "inet", self.name, "output"])
        else:
            _run(["iptables", "-F", self.chain])
        self.cut_now = None

    def close(self) -> None:
        """Remove everything this partitioner added; safe to call twice, never raises."""
        if not self.opened:
            return
        self.opened = False
        self.cut_now = None
        if self.how == "nft":
            _run(["nft", "delete", "table", "inet", self.name], check=False)
        else:
            _run(["iptables", "-D", "OUTPUT", "-j", self.chain], check=False)
            _run(["iptables", "-F", self.chain], check=False)
            _run(["iptables", "-X", self.chain], check=False)

    def __enter__(self) -> "Partitioner":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def leftover_tables() -> list[str]:
    """Names of the nft tables verify runs made and did not delete (for tests and checks)."""
    if shutil.which("nft") is None:
        return []
    out = _run(["nft", "list", "tables"], check=False).stdout
    return [line.split()[-1] for line in out.splitlines() if TABLE_PREFIX in line]
