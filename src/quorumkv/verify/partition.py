"""Network partitions between the nodes of a local cluster, for ``quorumkv verify``.

Every node of the cluster listens on its own IPv4 loopback address (all of 127/8 is
loopback on Linux; a node's peer links connect *from* its own address, see
``shell/peers.py``'s ``loopback_source``), so one node's traffic to another can be
told apart by its source and destination address. A partition drops every packet
between addresses on different sides with nftables: one table per run
(``inet qkvverify_<token>``) whose ``output`` chain (every loopback packet is
locally generated, so it passes there) holds ``ip saddr A ip daddr B drop`` rules;
``heal()`` flushes the chain, ``close()`` deletes the table. Clients connect from
127.0.0.1, which no rule names: a client keeps talking to its own node, whichever
side that node is on (Jepsen's model: the client lives with its node).

Where ``nft`` is missing, iptables is used the same way (a chain of its own, jumped to
from OUTPUT). Where neither is installed, ``quorumkv verify`` re-executes itself under
``unshare --net`` (same process id: ``unshare`` execs it) so that the cluster, the
clients and the nemesis run in a private network namespace that disappears with them;
there (and only there: ``open()`` checks that its namespace is not the one it was
started from) ``lo`` is brought up, the ``local`` table's rule moves from priority 0 to
100, and a cut adds ``ip rule add pref 10 from A to B blackhole`` for both directions
(``heal()`` deletes them). On the host's own namespace such rules would do nothing —
the ``local`` rule at priority 0 answers for 127/8 first — and moving it is not ours to
do. ``QKV_VERIFY_NETNS=1`` forces this path where nft is installed (to test what a
machine without it runs).

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


#: Set (to the network namespace inode it left) in a verify run re-executed under
#: ``unshare --net``; only there may the ``ip rule`` backend change rules.
NETNS_ENV = "QKV_VERIFY_NETNS_OF"
#: The rules' priorities inside the private namespace: cuts before the local table.
CUT_PREF, LOCAL_PREF = 10, 100


def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def in_private_netns() -> bool:
    """True in a verify run that re-executed itself into a namespace of its own."""
    left = os.environ.get(NETNS_ENV)
    return bool(left) and left.isdigit() and int(left) != _netns_inode()


def backend() -> str | None:
    """How partitions are made here: ``nft``, ``iptables``, ``netns`` (re-execute under
    ``unshare --net`` first), ``iprule`` (inside that namespace) or None.
    ``QKV_VERIFY_NO_NFT=1`` skips nft (to try iptables); ``QKV_VERIFY_NETNS=1`` skips
    both (to try the namespace path)."""
    if in_private_netns():
        return "iprule"
    force_netns = os.environ.get("QKV_VERIFY_NETNS") == "1"
    if not force_netns:
        if shutil.which("nft") and os.environ.get("QKV_VERIFY_NO_NFT") != "1":
            return "nft"
        if shutil.which("iptables"):
            return "iptables"
    if shutil.which("unshare") and shutil.which("ip"):
        return "netns"
    return None


def unavailable() -> str | None:
    """Why partitions cannot be made on this machine, or None."""
    if sys.platform != "linux":
        return "network partitions need Linux (nftables, iptables or unshare + ip)"
    if os.geteuid() != 0:
        return "network partitions need root (they add nftables/iptables or ip rules)"
    how = backend()
    if how is None:
        return ("network partitions need nft (nftables), iptables, or unshare (util-linux) with ip "
                "(iproute2); none is installed")
    probe = f"{TABLE_PREFIX}probe{secrets.token_hex(3)}"
    if how == "nft":
        made = _run(["nft", "add", "table", "inet", probe], check=False)
        if made.returncode != 0:
            return f"nft cannot add a table here: {made.stderr.strip() or made.returncode}"
        _run(["nft", "delete", "table", "inet", probe], check=False)
    elif how == "iptables":
        listed = _run(["iptables", "-S", "OUTPUT"], check=False)
        if listed.returncode != 0:
            return f"iptables cannot be used here: {listed.stderr.strip() or listed.returncode}"
    elif how == "netns":
        tried = _run(["unshare", "--net", "--", "ip", "rule", "add", "pref", str(LOCAL_PREF), "lookup", "local"],
                     check=False)
        if tried.returncode != 0:
            return f"unshare --net cannot make a network namespace here: {tried.stderr.strip() or tried.returncode}"
    return None


def netns_command(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``argv`` in a private network namespace
    (``unshare`` execs it: the process id stays the same)."""
    env = dict(os.environ, **{NETNS_ENV: str(_netns_inode())})
    return ["unshare", "--net", "--", *argv], env


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


def prepare_private_netns() -> None:
    """In verify's own namespace (before the nodes start): bring ``lo`` up and move the
    ``local`` table's rule behind the cuts' priority, so a cut's blackhole rule is
    consulted first. Refuses anywhere else."""
    if not in_private_netns():
        raise RuntimeError("refusing to move the local routing rule outside verify's own network namespace")
    _run(["ip", "link", "set", "lo", "up"])
    _run(["ip", "rule", "add", "pref", str(LOCAL_PREF), "lookup", "local"])
    _run(["ip", "rule", "del", "pref", "0", "lookup", "local"])


class Partitioner:
    """Cuts and heals a cluster whose nodes have distinct loopback addresses."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = dict(hosts)  # node id -> its IPv4 loopback address
        self.how = backend()
        self.name = f"{TABLE_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
        self.chain = f"QKVV{secrets.token_hex(4)}"  # iptables chain names: 28 characters at most
        self.opened = False
        self.cut_now: list[list[str]] | None = None
        self.rules: list[tuple[str, str]] = []  # iprule: (from, to) of each blackhole rule in place

    def open(self) -> "Partitioner":
        if self.how == "nft":
            _run(["nft", "-f", "-"], input=(
                f"table inet {self.name} {{\n"
                " chain output { type filter hook output priority 0; policy accept; }\n"
                "}\n"))
        elif self.how == "iptables":
            _run(["iptables", "-N", self.chain])
            _run(["iptables", "-I", "OUTPUT", "-j", self.chain])
        elif self.how == "iprule":
            if not in_private_netns():  # never on a namespace verify did not make itself
                raise RuntimeError("ip rule partitions only run in verify's own network namespace")
        elif self.how == "netns":
            raise RuntimeError("partitions without nft/iptables need the run re-executed under unshare --net "
                               "(the `quorumkv verify` command does it)")
        else:
            raise RuntimeError(unavailable() or "no nft, iptables or unshare")
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
        elif self.how == "iprule":
            for a, b in pairs:
                for src, dst in ((a, b), (b, a)):
                    _run(self._rule("add", src, dst))
                    self.rules.append((src, dst))
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
        elif self.how == "iprule":
            while self.rules:
                _run(self._rule("del", *self.rules[-1]))
                self.rules.pop()
        else:
            _run(["iptables", "-F", self.chain])
        self.cut_now = None

    @staticmethod
    def _rule(verb: str, src: str, dst: str) -> list[str]:
        return ["ip", "rule", verb, "pref", str(CUT_PREF), "from", src, "to", dst, "blackhole"]

    def close(self) -> None:
        """Remove everything this partitioner added; safe to call twice, never raises."""
        if not self.opened:
            return
        self.opened = False
        self.cut_now = None
        if self.how == "nft":
            _run(["nft", "delete", "table", "inet", self.name], check=False)
        elif self.how == "iprule":  # the namespace goes with the run; delete the cuts anyway
            for src, dst in self.rules:
                _run(self._rule("del", src, dst), check=False)
            self.rules = []
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
