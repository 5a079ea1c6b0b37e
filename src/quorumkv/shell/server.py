"""The node runtime: drives a NodeCore with asyncio, TCP and a storage engine.

The node is the one runtime (``runtime/executor.py``) with the real edges:
``peers.SocketTransport`` (TCP links to peers, answers on inbound connections),
``edges.EngineStorage`` (the storage engine and ``node-state.json``) and
``edges.WallClock``. Effects run in the order the executor documents;
persist-before-ack holds because a replica's ack is only produced by
``on_store_done``, which the engine calls after the write is durable.

Modules: ``conns.py`` (inbound connections: clients and peers), ``peers.py``
(outbound peer links, the transport), ``resp_server.py`` (the RESP front end),
``edges.py`` (storage and clock edges), this one (building the node, the tick loop,
the latency model, lifecycle).
"""

from __future__ import annotations

import asyncio
import os
import signal

import msgspec
import structlog

from ..core import messages as m
from ..core.antientropy import install as install_antientropy
from ..core.framing import FrameEncoder
from ..core.hints import HintSettings
from ..core.membership import DetectorSettings
from ..core.messages_admin import Snapshot
from ..core.node import NodeCore, NodeSettings, Respond
from ..core.paxos import install as install_paxos
from ..core.scan import ScanCoordinator
from ..errors import InvalidRequestError
from ..runtime import Executor
from . import auth, tls
from .antientropy import settings_from
from .config import NodeConfig, parse_address
from .conns import INBOUND_SEND_BYTES_HIGH, INBOUND_SEND_BYTES_LOW, Inbound
from .edges import EngineStorage, NodeState, WallClock
from .engines import open_engine
from .latency import MODEL_IN_USE_MS, MODEL_REFRESH_MS, MODEL_REFRESH_MS_IDLE, LatencyRecorder, build_table
from .metrics_hist import RequestLatency
from .peers import RECONNECT_MS_MIN, PeerLink, SocketTransport, loopback_source
from .snapshot import SnapshotShell
from .storage_base import StorageEngine
from .wallclock import mono_ms, now_ms, set_clock_offset_ms

log = structlog.get_logger("quorumkv.node")

# Old names, importable from here still (tests, tools).
_loopback_source = loopback_source
__all__ = ["INBOUND_SEND_BYTES_HIGH", "INBOUND_SEND_BYTES_LOW", "NodeServer", "configure_logging",
           "install_event_loop_policy", "serve"]


def _log_effect(eff) -> None:
    getattr(log, eff.level, log.info)(eff.event, **eff.fields)


class NodeServer:
    def __init__(self, config: NodeConfig, storage: StorageEngine | None = None) -> None:
        self.config = config
        set_clock_offset_ms(config.clock_offset_ms)
        self.loop = asyncio.get_running_loop()
        self.storage = storage or open_engine(
            config.storage, os.path.join(config.data_dir, "data"), fsync=config.fsync, loop=self.loop,
            redis_url=config.redis_url,
        )
        c = config
        now, wall = mono_ms(), now_ms()  # the core's two clocks (shell/wallclock.py)
        members, replace = dict(c.members), c.replace
        self.node_state = NodeState(config.data_dir)
        saved = self.node_state.load()
        if saved.get("bootstrapped"):
            members = {**saved.get("members", {}), **members}
            replace = False
        departed = {n: tuple(e) for n, e in saved.get("departed", {}).items()}  # an older state file
        known = {n: tuple(e) for n, e in saved.get("known", {}).items()}  # SaveMembers
        settings = NodeSettings(
            node_id=c.node_id, n=c.n, r=c.r, w=c.w,
            timeout_ms_read=c.timeout_ms_read, timeout_ms_write=c.timeout_ms_write,
            address=c.listen, generation=wall, seeds=tuple(c.seeds),
            detector=DetectorSettings(heartbeat_interval_ms=c.heartbeat_interval_ms, phi_suspect=c.phi_suspect,
                                      suspect_to_down_ms=c.suspect_to_down_ms),
            gossip_interval_ms=c.gossip_interval_ms, speculative_retry_ms=c.speculative_retry_ms,
            read_repair=c.read_repair, read_all_replicas=c.read_all_replicas, sloppy_quorum=c.sloppy_quorum,
            hints=HintSettings(bytes_max_per_target=c.hint_bytes_max_per_target, age_ms_max=c.hint_age_ms_max,
                               replay_per_s=c.hint_replay_per_s),
            rng_seed=int.from_bytes(os.urandom(8), "big"),
            replace=replace, settle_ms=c.settle_ms, max_clock_skew_ms=c.max_clock_skew_ms,
            tombstone_gc_grace_ms=c.tombstone_gc_grace_ms if c.tombstone_gc and self.storage.supports_purge else 0,
            timeout_ms_ring_sync=c.timeout_ms_ring_sync,
        )
        self.core = NodeCore(settings, members, hlc_last=self.storage.max_timestamp(), now_ms=now,
                             hints_held=self.storage.hint_summary(), hlc_ceiling=self.storage.hlc_ceiling(),
                             departed=departed, known=known, wall_ms=wall)
        # The one runtime (runtime/executor.py) on the real edges; ``run`` executes a step's effects.
        self.executor = Executor(self.core, EngineStorage(self.storage, self.node_state, self.loop),
                                 SocketTransport(self), WallClock(), _log_effect)
        self.run = self.executor.run
        self.encoder = FrameEncoder()
        self.links: dict[str, PeerLink] = {}
        self.inbound: set[Inbound] = set()
        # Shell counters, merged into the node's Status reply (``quorumkv cluster status``).
        self.stats = {"bad_input": 0, "bad_peer_frames": 0, "peer_response_errors": 0, "tick_errors": 0,
                      **dict.fromkeys(auth.SECURITY_COUNTERS, 0)}
        # Security (shell/auth.py, shell/tls.py): users of both ports, TLS contexts.
        self.users = auth.Users(config.users, config.resp_password)
        self.secure = self.users.enabled or config.tls
        self.open_types = auth.open_types(self.users.enabled, config.tls)
        self.tls_server_ctx = tls.server_context(config.tls_cert, config.tls_key, config.tls_ca) if config.tls else None
        self.tls_client_ctx = (tls.client_context(config.tls_ca, config.tls_cert, config.tls_key)
                               if config.tls else None)
        self._tls_listener = None
        self._server: asyncio.base_events.Server | None = None
        self.resp = None  # RespFrontEnd when config.resp_listen is set
        self.metrics = None  # MetricsServer when config.metrics_listen is set (shell/metrics.py)
        self.request_latency = RequestLatency()  # client request latency by op and level
        self.serving = False  # listening for clients (``/ready``)
        self._tick_handle = None
        self._tick_idle = False  # the scheduled tick is further away than tick_ms
        self._stopped = asyncio.Event()
        self.paxos = install_paxos(self.core)  # linearizable ops: CASPaxos + ABD reads (core/paxos.py)
        # config consistency = "linearizable": clients' plain Get/Put run as linearizable ops
        self.linearizable_default = config.consistency == "linearizable"
        # Merkle anti-entropy + tombstone GC (core/antientropy.py; settings: shell/antientropy.py)
        ae = self.ae = install_antientropy(self.core, settings_from(config, self.storage.supports_purge), now)
        self.core.add_busy_probe(  # an exchange in flight keeps the tick cadence up
            lambda: bool(ae.session or ae.pass_ or ae.repairs or ae.responders or ae.gc_round or ae.serving))
        # Live WARS samples of our internode traffic and the dynamic-quorum model
        # rebuilt from them every MODEL_REFRESH_MS (shell/latency.py, core/dynamic.py).
        self.latency = LatencyRecorder()
        self.core.install_latency_model(build_table({}, self.core.replication_factor(), wall))
        self.core.handle_requests({m.Latencies: self._on_latencies})
        self.scan = ScanCoordinator(self.core)  # SCAN/KEYS across the cluster (core/scan.py)
        self.snapshots = SnapshotShell(self)  # backups (shell/snapshot.py)
        self.core.handle_requests({Snapshot: self.snapshots.on_request})
        self._model_handle = None
        self._model_job = None
        self._model_seen: tuple = ()
        self._model_built_ms = 0  # when the last build started
        self._model_used_ms = -MODEL_IN_USE_MS  # when a dynamic request was last seen
        self._model_dynamic_seen = 0

    @property
    def stats_bad_input(self) -> int:
        return self.stats["bad_input"]

    @stats_bad_input.setter
    def stats_bad_input(self, value: int) -> None:
        self.stats["bad_input"] = value

    # -- shell facts in the core's replies --------------------------------------
    def shell_facts(self, msg):
        """``StatusReply``/``Pong`` with what only the shell knows (storage, links)."""
        if type(msg) is m.StatusReply:
            return msgspec.structs.replace(msg, stats={**msg.stats, **self.stats, **self._status_stats()},
                                           info=self._status_info())
        return msgspec.structs.replace(msg, storage=self.storage.name, keys=self.storage.count(),
                                       peers_connected=sum(1 for lk in self.links.values() if lk.state == "up"))

    def _status_stats(self) -> dict[str, int]:
        """Shell facts for ``cluster status``: local storage, ring shape."""
        from .metrics import storage_bytes  # noqa: PLC0415 - prometheus_client only when asked

        return {"storage_keys": self.storage.count(), "storage_bytes": storage_bytes(self.storage),
                "vnodes": self.core.settings.vnodes, "n_configured": self.core.settings.n}

    def _status_info(self) -> dict[str, str]:
        from .. import __version__  # noqa: PLC0415

        c = self.config
        return {"resp": c.resp_listen, "metrics": c.metrics_listen, "storage": self.storage.name,
                "version": __version__}

    def peer_heard(self, peer: str) -> None:
        """A peer spoke to us: it is up, so skip any reconnect back-off towards it."""
        link = self.links.get(peer)
        if link is not None and link.state == "down":
            link.retry_at_ms = 0
            link.backoff_ms = RECONNECT_MS_MIN

    def link(self, peer: str) -> "PeerLink | None":
        """A new outbound link to ``peer`` at the address the core knows (None: none)."""
        address = self.core.address_of(peer)
        if address is None:
            return None
        link = self.links[peer] = PeerLink(self, peer, address)
        return link

    # -- live latencies and the dynamic-quorum model ----------------------------
    def _on_latencies(self, conn, msg, now: int, out: list) -> None:
        snap = self.latency.snapshot()
        model = self.core.latency_model
        out.append(Respond(conn, m.LatenciesReply(msg.id, self.core.node_id, snap["w"], snap["a"], snap["r"],
                                                  snap["s"], dict(self.latency.recorded),
                                                  model.to_dict() if model is not None else {})))

    def _model_tick(self) -> None:
        """Rebuild the model in a worker thread when new samples arrived (one job at a
        time): every MODEL_REFRESH_MS while the model is in use (not ready yet, or a
        dynamic request within MODEL_IN_USE_MS), else every MODEL_REFRESH_MS_IDLE."""
        self._model_handle = self.loop.call_later(MODEL_REFRESH_MS / 1000, self._model_tick)
        n = self.core.replication_factor()
        seen = (n, tuple(self.latency.recorded.values()))
        if self._model_job is not None or seen == self._model_seen:
            return
        now = now_ms()
        dynamic = self.core.stats.get("dynamic_requests", 0)
        if dynamic != self._model_dynamic_seen:
            self._model_dynamic_seen = dynamic
            self._model_used_ms = now
        model = self.core.latency_model
        in_use = model is None or not model.ready or now - self._model_used_ms < MODEL_IN_USE_MS
        if not in_use and now - self._model_built_ms < MODEL_REFRESH_MS_IDLE:
            return
        self._model_seen = seen
        self._model_built_ms = now
        job = self._model_job = self.loop.run_in_executor(None, build_table, self.latency.snapshot(), n, now_ms())
        job.add_done_callback(self._model_built)

    def _model_built(self, job) -> None:
        self._model_job = None
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:
            log.error("latency_model_failed", error=repr(exc))
            return
        self.core.install_latency_model(job.result())

    def _tick(self) -> None:
        # The next tick is scheduled whatever this one does: an exception in one step
        # (a bug) is logged and counted, and the node keeps its timers, heartbeats
        # and deadlines running instead of going silently deaf.
        try:
            self.executor.tick()
        except Exception:
            self.stats["tick_errors"] += 1
            log.exception("tick_failed", node=self.core.node_id)
        finally:
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        """Tick every ``tick_ms`` while the core has work in flight; when idle, sleep
        until its next deadline (``NodeCore.next_deadline_ms``), at most
        ``tick_ms_idle_max``. ``wake`` pulls an idle sleep in when work arrives."""
        cfg = self.config
        now = mono_ms()  # the core's deadlines are monotonic
        try:
            due = self.core.next_deadline_ms(now)
        except Exception:
            self.stats["tick_errors"] += 1
            log.exception("next_deadline_failed", node=self.core.node_id)
            due = now
        delay_ms = min(max(due - now, cfg.tick_ms), cfg.tick_ms_idle_max)
        self._tick_idle = delay_ms > cfg.tick_ms
        self._tick_handle = self.loop.call_later(delay_ms / 1000, self._tick)

    def wake(self) -> None:
        """Events were handled: if the core now has work in flight and the tick loop
        sleeps long, bring the next tick in to ``tick_ms``."""
        if self._tick_idle and self._tick_handle is not None:
            now = mono_ms()
            try:
                busy = self.core.next_deadline_ms(now) <= now + self.config.tick_ms
            except Exception:
                busy = True
            if busy:
                self._tick_handle.cancel()
                self._tick_idle = False
                self._tick_handle = self.loop.call_later(self.config.tick_ms / 1000, self._tick)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        host, port = parse_address(self.config.listen)
        if self.tls_server_ctx is not None:
            self._tls_listener = tls.TlsListener(
                self.loop, lambda: Inbound(self), self.tls_server_ctx, self.stats,
                self.encoder.encode(m.Error(0, "this port requires TLS (the client's tls_ca=, or QUORUMKV_TLS_CA)")),
                "native")
            await self._tls_listener.start(host, port)
        else:
            self._server = await self.loop.create_server(lambda: Inbound(self), host, port, reuse_address=True)
        if self.config.resp_listen:
            from .resp_server import RespFrontEnd  # noqa: PLC0415 - only nodes that speak RESP load it

            self.resp = RespFrontEnd(self)
            await self.resp.start()
        self._schedule_tick()
        self._model_handle = self.loop.call_later(MODEL_REFRESH_MS / 1000, self._model_tick)
        self.serving = True
        if self.config.metrics_listen:
            from .metrics import MetricsServer  # noqa: PLC0415 - only nodes that serve metrics load it

            self.metrics = MetricsServer(self)
            self.metrics.start(self.config.metrics_listen)
        log.info("node_started", node=self.config.node_id, listen=self.config.listen,
                 storage=self.storage.name, n=self.core.settings.n, members=len(self.config.members),
                 seeds=list(self.config.seeds))

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._model_handle is not None:
            self._model_handle.cancel()
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        if self.resp is not None:
            self.resp.close()
        if self.metrics is not None:
            self.metrics.close()
        for conn in list(self.inbound):
            if conn.transport is not None:
                conn.transport.close()
        for link in self.links.values():
            link.close()
        await asyncio.sleep(0)
        self.storage.close()
        log.info("node_stopped", node=self.config.node_id)


def configure_logging(level: str = "info") -> None:
    """JSON lines only, repeated events rate-limited (shell/logsetup.py)."""
    from .logsetup import configure  # noqa: PLC0415

    configure(level)


def install_event_loop_policy(event_loop: str = "uvloop") -> None:
    """uvloop when asked for and installed (a dependency; measured in
    docs/performance.md), else asyncio's own loop."""
    if event_loop != "uvloop":
        return
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def serve(config: NodeConfig) -> None:
    """Run one node in the foreground until SIGTERM/SIGINT."""
    configure_logging(config.log_level)
    install_event_loop_policy(config.event_loop)

    async def main() -> None:
        server = NodeServer(config)
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        log.info("node_listening", node=config.node_id, listen=config.listen, resp=config.resp_listen,
                 metrics=config.metrics_listen)
        await server.serve_forever()
        await server.stop()

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, SystemExit):
        raise
    except (OSError, InvalidRequestError) as exc:  # port in use, bad config: the CLI says it in one line
        log.error("node_failed", node=config.node_id, error=str(exc))
        raise
    except Exception:
        log.exception("node_crashed", node=config.node_id)
        raise
