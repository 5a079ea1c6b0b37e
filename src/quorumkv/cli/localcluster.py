"""A local cluster of real node processes under one directory.

Layout (everything a node owns is under ``DIR/NODE_ID/``)::

    DIR/cluster.toml          the cluster: node ids and addresses, N, storage
    DIR/n1/node.toml          the node's config (``quorumkv serve --config``)
    DIR/n1/node.log           its stdout/stderr (structured JSON log lines)
    DIR/n1/node.pid           its process id while it runs
    DIR/n1/data/              its storage (kv.sqlite3 for the default engine)
"""

from __future__ import annotations

import os
import signal
import sys
import time
import tomllib
from dataclasses import dataclass

from ..client import Client
from ..errors import QuorumKVError

#: How long ``cluster up`` waits for every node to answer a ping.
READY_TIMEOUT_MS = 20_000
#: How long ``wait_converged`` waits for every live node to see the nodes concerned
#: as up, from their current process, with a working link to them. Heartbeats
#: (every 200 ms) and gossip (every 500 ms) settle this in about a second on an idle
#: machine; the bound leaves room for a loaded one.
CONVERGE_TIMEOUT_MS = 30_000
#: How often ``wait_converged`` asks every live node for its view.
CONVERGE_POLL_MS = 100
#: How long one node may take to answer one readiness probe.
CONVERGE_PROBE_TIMEOUT_MS = 1_000
#: Problems named in a time-out message at most (the rest are counted).
PROBLEMS_SHOWN_MAX = 4
#: A ping that takes longer than this counts the node as down in ``status``.
STATUS_PING_TIMEOUT_MS = 1_000
#: ``cluster down`` waits this long for a clean exit before SIGKILL.
STOP_TIMEOUT_MS = 5_000


@dataclass
class NodeInfo:
    id: str
    address: str
    dir: str
    resp: str = ""  # HOST:PORT of its Redis-protocol listener ("" = none)
    metrics: str = ""  # HOST:PORT of its HTTP metrics / health listener ("" = none)

    @property
    def pid_file(self) -> str:
        return os.path.join(self.dir, "node.pid")

    @property
    def config_file(self) -> str:
        return os.path.join(self.dir, "node.toml")

    @property
    def log_file(self) -> str:
        return os.path.join(self.dir, "node.log")

    def pid(self) -> int | None:
        try:
            with open(self.pid_file) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)


class NotReadyError(TimeoutError):
    """The cluster did not reach the state asked for within the bound."""


def _proc_state(pid: int) -> str:
    """The process state letter from /proc (R, S, D, Z, T, ...), "" if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return ""


def pid_paused(pid: int) -> bool:
    """Stopped by SIGSTOP (``cluster kill --signal STOP``): alive but not serving."""
    return _proc_state(pid) in ("T", "t")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed child not yet reaped) is not alive.
    return _proc_state(pid) != "Z"


class LocalCluster:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.nodes: list[NodeInfo] = []
        path = os.path.join(self.root, "cluster.toml")
        if os.path.exists(path):
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
            resp = raw.get("resp", {})
            metrics = raw.get("metrics", {})
            for node_id, addr in raw.get("members", {}).items():
                self.nodes.append(NodeInfo(node_id, addr, os.path.join(self.root, node_id), resp.get(node_id, ""),
                                           metrics.get(node_id, "")))

    @property
    def exists(self) -> bool:
        return bool(self.nodes)

    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def node(self, node_id: str) -> NodeInfo:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in {self.root} (nodes: {', '.join(n.id for n in self.nodes)})")

    # -- create ---------------------------------------------------------------
    def create(self, count: int, *, base_port: int, replicas: int, storage: str = "sqlite",
               host: str = "127.0.0.1", r: str = "QUORUM", w: str = "QUORUM", fsync: bool = True,
               timeout_ms: int = 2_000, node_overrides: dict[str, dict] | None = None,
               hosts: list[str] | None = None) -> None:
        """``node_overrides``: per node id, extra NodeConfig fields (e.g. ``redis_url``).
        ``hosts``: one listen host per node (e.g. 127.0.0.2, 127.0.0.3, ... so that
        traffic between two nodes can be told apart by address); default ``host`` for all."""
        from ..shell.config import NodeConfig  # noqa: PLC0415 - keeps `quorumkv get` start-up light

        if count < 1:
            raise ValueError("a cluster needs at least one node")
        if hosts is not None and len(hosts) != count:
            raise ValueError(f"{count} nodes need {count} hosts, not {len(hosts)}")
        node_host = list(hosts) if hosts is not None else [host] * count
        members = {f"n{i + 1}": f"{node_host[i]}:{base_port + i}" for i in range(count)}
        # Node i's RESP port comes after every node's internode port: base + count + i.
        resp = {f"n{i + 1}": f"{node_host[i]}:{base_port + count + i}" for i in range(count)}
        # Metrics: the first free ports after those (a test reserves only 2 x count).
        if hosts is None:
            metrics_ports = _free_ports(base_port + 2 * count, count, host)
        else:
            metrics_ports = [_free_ports(base_port + 2 * count + i, 1, node_host[i])[0] for i in range(count)]
        metrics = {f"n{i + 1}": f"{node_host[i]}:{metrics_ports[i]}" for i in range(count)}
        os.makedirs(self.root, exist_ok=True)
        self.nodes = []
        for node_id, addr in members.items():
            extra = dict((node_overrides or {}).get(node_id, {}))
            extra.setdefault("metrics_listen", metrics[node_id])
            info = NodeInfo(node_id, addr, os.path.join(self.root, node_id), resp[node_id], extra["metrics_listen"])
            os.makedirs(info.dir, exist_ok=True)
            cfg = NodeConfig(node_id=node_id, listen=addr, data_dir=info.dir, members=members,
                             storage=storage, fsync=fsync, n=replicas, r=r, w=w,
                             timeout_ms_read=timeout_ms, timeout_ms_write=timeout_ms,
                             resp_listen=resp[node_id], **extra)
            with open(info.config_file, "w") as fh:
                fh.write(cfg.to_toml())
            self.nodes.append(info)
        self._save(replicas, storage)

    def _save(self, replicas: int, storage: str) -> None:
        with open(os.path.join(self.root, "cluster.toml"), "w") as fh:
            fh.write(f"replicas = {replicas}\nstorage = \"{storage}\"\n\n[members]\n")
            for node in self.nodes:
                fh.write(f'{node.id} = "{node.address}"\n')
            fh.write("\n[resp]\n")
            for node in self.nodes:
                if node.resp:
                    fh.write(f'{node.id} = "{node.resp}"\n')
            fh.write("\n[metrics]\n")
            for node in self.nodes:
                if node.metrics:
                    fh.write(f'{node.id} = "{node.metrics}"\n')

    def add_node(self, *, port: int | None = None, resp_port: int | None = None) -> NodeInfo:
        """Create the next node (``nK``) configured to *join* through the others as seeds.

        It lists only itself as a member; gossip with a seed admits it and spreads
        the news. Ports default to just above every port the cluster uses.
        """
        from ..shell.config import NodeConfig  # noqa: PLC0415

        if not self.nodes:
            raise ValueError("no cluster to add to")
        template = NodeConfig.load(self.nodes[0].config_file)
        used = [int(a.rsplit(":", 1)[1]) for n in self.nodes for a in (n.address, n.resp, n.metrics) if a]
        host = self.nodes[0].address.rsplit(":", 1)[0]
        port = port or _free_pair(max(used) + 1)
        resp_port = resp_port or port + 1
        node_id = f"n{max(int(n.id[1:]) for n in self.nodes if n.id[1:].isdigit()) + 1}"
        addr, resp = f"{host}:{port}", f"{host}:{resp_port}"
        metrics = f"{host}:{_free_ports(resp_port + 1, 1, host)[0]}" if template.metrics_listen else ""
        info = NodeInfo(node_id, addr, os.path.join(self.root, node_id), resp, metrics)
        os.makedirs(info.dir, exist_ok=True)
        fields = {k: getattr(template, k) for k in template.__dataclass_fields__}
        fields.update(node_id=node_id, listen=addr, data_dir=info.dir, members={node_id: addr},
                      seeds=[n.address for n in self.nodes], resp_listen=resp, metrics_listen=metrics)
        with open(info.config_file, "w") as fh:
            fh.write(NodeConfig(**fields).to_toml())
        self.nodes.append(info)
        with open(os.path.join(self.root, "cluster.toml"), "rb") as fh:
            raw = tomllib.load(fh)
        self._save(raw.get("replicas", template.n), raw.get("storage", template.storage))
        return info

    def _cluster_meta(self) -> dict:
        with open(os.path.join(self.root, "cluster.toml"), "rb") as fh:
            return tomllib.load(fh)

    def replace_node(self, dead_id: str, *, port: int | None = None) -> NodeInfo:
        """Set up a replacement for dead node ``dead_id``: same id (so the same ring
        ranges), new address, fresh data directory; it starts ``replacing`` and pulls
        its ranges' data from the live replicas. The dead node's directory is kept
        as ``DIR/ID.replaced-K`` for forensics."""
        from ..shell.config import NodeConfig  # noqa: PLC0415

        dead = self.node(dead_id)
        if dead.running():
            raise ValueError(f"{dead_id} is running (pid {dead.pid()}); a replacement is for a dead node")
        template = NodeConfig.load(dead.config_file)
        k = 1
        while os.path.exists(f"{dead.dir}.replaced-{k}"):
            k += 1
        os.rename(dead.dir, f"{dead.dir}.replaced-{k}")
        used = [int(a.rsplit(":", 1)[1]) for n in self.nodes for a in (n.address, n.resp, n.metrics) if a]
        host = dead.address.rsplit(":", 1)[0]
        port = port or _free_pair(max(used) + 1)
        metrics = f"{host}:{_free_ports(port + 2, 1, host)[0]}" if template.metrics_listen else ""
        info = NodeInfo(dead_id, f"{host}:{port}", dead.dir, f"{host}:{port + 1}", metrics)
        os.makedirs(info.dir, exist_ok=True)
        fields = {f: getattr(template, f) for f in template.__dataclass_fields__}
        fields.update(listen=info.address, data_dir=info.dir, members={dead_id: info.address},
                      seeds=[n.address for n in self.nodes if n.id != dead_id], resp_listen=info.resp,
                      metrics_listen=metrics,
                      replace=True)
        with open(info.config_file, "w") as fh:
            fh.write(NodeConfig(**fields).to_toml())
        self.nodes[self.nodes.index(dead)] = info
        meta = self._cluster_meta()
        self._save(meta.get("replicas", template.n), meta.get("storage", template.storage))
        return info

    def apply_settings(self, settings: dict) -> None:
        """Write ``settings`` (``parse_settings``) into every node's config file; a
        node picks them up at its next start."""
        from ..shell.config import NodeConfig  # noqa: PLC0415

        for info in self.nodes:
            cfg = NodeConfig.load(info.config_file)
            for key, value in settings.items():
                setattr(cfg, key, value)
            cfg.__post_init__()
            with open(info.config_file, "w") as fh:
                fh.write(cfg.to_toml())

    def remove_node(self, node_id: str) -> None:
        """Forget a node that has left (its directory stays on disk)."""
        node = self.node(node_id)
        self.nodes.remove(node)
        meta = self._cluster_meta()
        self._save(meta.get("replicas", 3), meta.get("storage", "sqlite"))

    # -- processes ------------------------------------------------------------
    def start(self, node: NodeInfo) -> int:
        import subprocess  # noqa: PLC0415 - `quorumkv get --dir` reads this module and starts nothing

        if node.running():
            return node.pid()
        log = open(node.log_file, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "quorumkv", "serve", "--config", node.config_file],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=node.dir,
        )
        log.close()
        with open(node.pid_file, "w") as fh:
            fh.write(str(proc.pid))
        return proc.pid

    def client_options(self) -> dict:
        """How this cluster's own checks (readiness, status) reach its nodes when they
        are secured (docs/operations.md, Security): the default user's password
        (``resp_password``) and the CA (``tls_ca``) from the first node's config —
        the directory is the operator's. Explicit ``QUORUMKV_*`` variables win."""
        if not self.nodes:
            return {}
        try:
            with open(self.nodes[0].config_file, "rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, ValueError):
            return {}
        opts = {}
        if raw.get("resp_password") and not os.environ.get("QUORUMKV_PASSWORD"):
            opts.update(user="default", password=raw["resp_password"])
        if raw.get("tls_ca") and not os.environ.get("QUORUMKV_TLS_CA"):
            opts["tls_ca"] = raw["tls_ca"]
        return opts

    def wait_ready(self, nodes: list[NodeInfo], timeout_ms: int = READY_TIMEOUT_MS) -> None:
        deadline = time.monotonic() + timeout_ms / 1000
        for node in nodes:
            while True:
                if ping(node.address, 250, **self.client_options()) is not None:
                    break
                if not node.running():
                    last = (tail(node.log_file, 1).strip() or "no output").splitlines()[-1]
                    raise RuntimeError(f"node {node.id} exited during startup: {last} (log: {node.log_file})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.id} not ready after {timeout_ms} ms; see {node.log_file}")
                time.sleep(0.05)

    def up(self) -> None:
        """Start every node that is not running; return once each answers and every
        one sees every other as up with a working link (``wait_converged``)."""
        for node in self.nodes:
            self.start(node)
        self.wait_ready(self.nodes)
        self.wait_converged(self.nodes)

    def live_nodes(self) -> list[NodeInfo]:
        """Nodes whose process runs and is not paused (SIGSTOP)."""
        live = []
        for node in self.nodes:
            pid = node.pid()
            if pid is not None and pid_alive(pid) and not pid_paused(pid):
                live.append(node)
        return live

    def readiness_problems(self, concerned: list[NodeInfo]) -> list[str]:
        """What stands between the cluster and "ready" for the nodes ``concerned``:
        one sentence per problem, empty when ready.

        Ready means, asked of every live node Y (see ``live_nodes``): Y answers; for
        each concerned node X, Y sees X ``up`` (not joining/replacing/suspect/down)
        and X sees Y as up; if Y has heard of an X process at all, it is the current
        one (the generation X reports for itself: a view of X from before a restart,
        whose phi has not yet risen, does not count; generation 0 is the start-up
        assumption of a Y that never heard of an older X); and Y has an open link to
        every other live node (``Pong.peers_connected``), so heartbeats flow.
        """
        live = self.live_nodes()
        live_ids = {n.id for n in live}
        problems = [f"{x.id} is not running" for x in concerned if x.id not in live_ids]
        views: dict[str, dict] = {}
        pongs = {}
        for node in live:
            status, pong = probe(node.address, CONVERGE_PROBE_TIMEOUT_MS, **self.client_options())
            if status is None or pong is None:
                problems.append(f"{node.id} ({node.address}) does not answer")
                continue
            views[node.id] = {mv.node: mv for mv in status.members}
            pongs[node.id] = pong
        for x in concerned:
            own = views.get(x.id, {}).get(x.id)
            for y in live:
                if y.id == x.id or y.id not in views:
                    continue
                seen = views[y.id].get(x.id)
                if seen is None:
                    problems.append(f"{y.id} does not know {x.id} yet")
                elif seen.state != "up":
                    problems.append(f"{y.id} sees {x.id} as {seen.state} (phi {seen.phi:.1f})")
                elif own is not None and seen.generation not in (0, own.generation):
                    problems.append(f"{y.id} has not heard from {x.id}'s current process yet")
                if x.id in views:
                    back = views[x.id].get(y.id)
                    if back is None:
                        problems.append(f"{x.id} does not know {y.id} yet")
                    elif back.state != "up":
                        problems.append(f"{x.id} sees {y.id} as {back.state} (phi {back.phi:.1f})")
        want = len(live) - 1
        for node_id, pong in pongs.items():
            if pong.peers_connected < want:
                problems.append(f"{node_id} has a working link to {pong.peers_connected} of {want} live peers")
        return problems

    def wait_converged(self, concerned: list[NodeInfo], timeout_ms: int = CONVERGE_TIMEOUT_MS) -> None:
        """Return once ``readiness_problems(concerned)`` is empty; raise
        ``NotReadyError`` naming who does not see whom after ``timeout_ms``."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            problems = self.readiness_problems(concerned)
            if not problems:
                return
            if time.monotonic() > deadline:
                shown = "; ".join(problems[:PROBLEMS_SHOWN_MAX])
                more = f" (and {len(problems) - PROBLEMS_SHOWN_MAX} more)" if len(problems) > PROBLEMS_SHOWN_MAX else ""
                raise NotReadyError(f"not ready after {timeout_ms} ms: {shown}{more}")
            time.sleep(CONVERGE_POLL_MS / 1000)

    def signal(self, node: NodeInfo, sig: int) -> bool:
        pid = node.pid()
        if pid is None or not pid_alive(pid):
            return False
        os.kill(pid, sig)
        return True

    def stop(self, node: NodeInfo, timeout_ms: int = STOP_TIMEOUT_MS) -> bool:
        """Stop the node's process; True if one was running."""
        pid = node.pid()
        if pid is None or not pid_alive(pid):
            return False
        try:
            os.kill(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_ms / 1000
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.02)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        return True

    def down(self) -> int:
        """Stop every node; returns how many were running."""
        return sum(self.stop(node) for node in self.nodes)

    def view(self):
        """The membership as the first reachable node sees it (a StatusReply), or None."""
        for node in self.nodes:
            if node.running():
                reply = node_status(node.address, STATUS_PING_TIMEOUT_MS, **self.client_options())
                if reply is not None:
                    return reply
        return None

    def status(self) -> list[dict]:
        """One row per node. ``state`` is what one live node (``seen_by``) believes —
        joining/up/suspect/down/leaving/left — except that a node whose process this
        machine knows is not running is ``down`` outright."""
        view = self.view()
        seen = {m.node: m for m in view.members} if view is not None else {}
        rows = []
        for node in self.nodes:
            pid = node.pid()
            alive = pid is not None and pid_alive(pid)
            member = seen.get(node.id)
            if not alive:
                state = "down"
            elif member is not None:
                state = member.state
            else:
                state = "up" if ping(node.address, STATUS_PING_TIMEOUT_MS, **self.client_options()) is not None else "down"
            rows.append({
                "id": node.id,
                "address": node.address,
                "resp": node.resp,
                "metrics": node.metrics,
                "pid": pid if alive else None,
                "state": state,
                "process": "running" if alive else "stopped",
                "seen_by": view.node if view is not None else None,
                "phi": member.phi if member is not None else None,
                # its clock minus the viewing node's (None: not measured, or the viewer)
                "clock_offset_ms": getattr(member, "clock_offset_ms", None),
            })
        return rows


#: Config keys that differ per node by nature: ``cluster up --set`` refuses them.
PER_NODE_KEYS = ("node_id", "listen", "data_dir", "members", "seeds", "replace", "resp_listen", "metrics_listen")


def parse_settings(items: list[str]) -> dict:
    """``["KEY=VALUE", ...]`` (``cluster up --set``) -> NodeConfig fields, validated:
    VALUE is read as TOML (``true``, ``500``, ``"x"``, ``["a"]``) or else as a plain
    string; an unknown key, a per-node key, a wrong type or a value the node would
    refuse raises ValueError with one line saying which."""
    import dataclasses  # noqa: PLC0415
    import difflib  # noqa: PLC0415

    from ..shell.config import NodeConfig  # noqa: PLC0415

    fields = {f.name: f for f in dataclasses.fields(NodeConfig)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            raise ValueError(f"--set {key}: unknown config key" + (f" (did you mean {close[0]}?)" if close else ""))
        if key in PER_NODE_KEYS:
            raise ValueError(f"--set {key}: set per node, not for the whole cluster")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        default = fields[key].default
        if default is dataclasses.MISSING:
            default = fields[key].default_factory()
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif key in ("r", "w"):
            ok = isinstance(value, (int, str))
        elif isinstance(default, str) and not isinstance(value, str):
            value, ok = raw, True  # e.g. a password of digits
        else:
            ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
        if not ok:
            raise ValueError(f"--set {key}={raw}: expected {type(default).__name__}, got {type(value).__name__}")
        out[key] = value
    try:
        NodeConfig(node_id="n1", listen="127.0.0.1:1", data_dir=".", **out)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--set: {exc}") from None
    return out


def ports_free(base: int, count: int, host: str = "127.0.0.1") -> bool:
    """True when ``base .. base+count-1`` can all be bound on ``host`` right now."""
    import socket

    socks = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            socks.append(s)
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _free_pair(start: int) -> int:
    """The first port P >= start with P and P+1 both free (node + RESP)."""
    for port in range(start, min(start + 2_000, 65_000)):
        if ports_free(port, 2):
            return port
    raise RuntimeError(f"no free port pair at or above {start}")


def _free_ports(start: int, count: int, host: str = "127.0.0.1") -> list[int]:
    """The first ``count`` ports >= ``start`` that are free one by one."""
    found = []
    for port in range(start, min(start + 2_000, 65_000)):
        if ports_free(port, 1, host):
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"no {count} free ports at or above {start}")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ping(address: str, timeout_ms: int, **opts):
    """``opts``: Client security options (``LocalCluster.client_options``)."""
    try:
        with Client([address], timeout_ms=timeout_ms, **opts) as c:
            return c.ping()
    except (QuorumKVError, OSError):
        return None


def probe(address: str, timeout_ms: int, **opts):
    """(StatusReply, Pong) from one node over one connection; (None, None) if it
    does not answer."""
    try:
        with Client([address], timeout_ms=timeout_ms, **opts) as c:
            return c.status(), c.ping()
    except (QuorumKVError, OSError):
        return None, None


def node_status(address: str, timeout_ms: int, **opts):
    try:
        with Client([address], timeout_ms=timeout_ms, **opts) as c:
            return c.status()
    except (QuorumKVError, OSError):
        return None


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            return b"".join(fh.readlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""
