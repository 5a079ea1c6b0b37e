"""The HTTP side of a node: Prometheus metrics, ``/health`` and ``/ready``.

Served by prometheus-client's own WSGI server (stdlib ``wsgiref``, one thread per
request, started when ``metrics_listen`` is set). Nothing is instrumented for it on
the hot path but the request-latency histogram (``metrics_hist.py``): a scrape asks
the event loop for a snapshot of the counters the node keeps anyway (the core's
``statistics()``, the shell's counters, membership, hints, storage, RESP) and a
custom collector turns it into metric families. The snapshot is taken *on the loop
thread* (the core is not thread-safe), so a scrape waits for the loop — at most
``SNAPSHOT_TIMEOUT_MS``; a loop that does not answer in time fails the scrape and
``/health``.

Endpoints: ``/metrics`` (and any other path: prometheus-client's convention),
``/health`` (200 while the event loop answers: liveness), ``/ready`` (200 while the
node is a member of the ring in state ``up`` and serving requests: readiness; 503
while joining, replacing, leaving or left, with the reason as text).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from .. import __version__
from ..core.membership import UP
from ..core.ringinfo import ownership
from ..core.version import LOGICAL_BITS
from .config import parse_address
from .wallclock import mono_ms

log = structlog.get_logger("quorumkv.metrics")

#: How long a scrape or a /health probe waits for the event loop to take a snapshot.
SNAPSHOT_TIMEOUT_MS = 2_000


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # one access line per scrape would drown the node's JSON log


# ------------------------------------------------------------------ snapshot
def snapshot(server, now_ms: int) -> dict:
    """Everything the collector exposes, copied on the event-loop thread."""
    core = server.core
    ms = core.membership
    peers = []
    for node, _e in sorted(ms.endpoints.items()):
        if node == core.node_id:
            continue
        det = ms.detectors.get(node)
        peers.append((node, ms.state_of(node), core.is_alive(node), det.phi(now_ms) if det is not None else 0.0,
                      core.clock.offset_of(node)))
    ring = core.ring
    resp = server.resp
    storage = server.storage
    batch = getattr(storage, "batch_sizes", None)
    return {
        "node": core.node_id,
        "stats": core.statistics(),
        "shell": dict(server.stats),
        "hints": {o: (c, b) for o, (c, b) in core.hints_held.items() if c > 0},
        "peers": peers,
        "status": ms.me.status,
        "ring_nodes": list(ring.nodes) if ring is not None else [],
        "ownership": _ownership(ring),
        "storage": storage.name,
        "keys": storage.count(),
        "bytes": storage_bytes(storage),
        "resp": dict(resp.stats) if resp is not None else None,
        "inbound": len(server.inbound),
        "links_up": sum(1 for lk in server.links.values() if lk.state == "up"),
        "latency": {label: (b.cumulative(), b.sum) for label, b in server.request_latency.series.items()},
        "batch": (batch.cumulative(), batch.sum) if batch is not None else None,
        "serving": server.serving,
        # how far this node's HLC runs ahead of its wall clock (a peer's clock ahead pulls it)
        "hlc_ahead_ms": max((core.hlc.last >> LOGICAL_BITS) - core.wall_ms(now_ms), 0),
    }


_ownership_cache: list = [None, {}]  # [ring, its ownership]: a Ring is immutable, rebuilt on change


def _ownership(ring) -> dict:
    if ring is None:
        return {}
    if _ownership_cache[0] is not ring:
        _ownership_cache[:] = [ring, ownership(ring)]
    return _ownership_cache[1]


def storage_bytes(storage) -> int:
    """On-disk bytes of a SQLite engine (database + WAL); -1 where not known."""
    path = getattr(storage, "path", None)
    if not path:
        return -1
    total = 0
    for p in (path, path + "-wal", path + "-shm"):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


def readiness(snap: dict) -> str:
    """Why the node is not ready ("" when it is)."""
    if not snap["serving"]:
        return "not serving yet"
    if snap["status"] != UP:
        return f"member status is {snap['status']}"
    if snap["node"] not in snap["ring_nodes"]:
        return "not in the ring"
    return ""


# ----------------------------------------------------------------- collector
def _counter(name, doc, value, labels=None, label_values=None):
    fam = CounterMetricFamily(name, doc, labels=labels)
    if labels:
        for lv, v in zip(label_values, value):
            fam.add_metric(lv, v)
    else:
        fam.add_metric([], value)
    return fam


def _gauge(name, doc, value):
    fam = GaugeMetricFamily(name, doc)
    fam.add_metric([], value)
    return fam


def families(snap: dict):
    """The metric families of one snapshot (Prometheus naming: quorumkv_ prefix,
    base units, _total counters)."""
    st = snap["stats"]
    sh = snap["shell"]
    g = st.get
    info = GaugeMetricFamily("quorumkv_node_info", "Constant 1, labelled with what this node is.",
                             labels=["node", "version", "storage"])
    info.add_metric([snap["node"], __version__, snap["storage"]], 1)
    yield info
    yield _counter("quorumkv_client_requests_total", "Client Get/Put requests received.", g("requests", 0))
    yield _counter("quorumkv_quorum_rounds_total", "Quorum rounds coordinated here, by outcome.",
                   [g("won", 0), g("lost", 0) - g("timeouts", 0), g("timeouts", 0)], ["outcome"],
                   [["ok"], ["unavailable"], ["timeout"]])
    yield _counter("quorumkv_coordinated_requests_total", "Reads and writes this node coordinated.",
                   [g("reads", 0), g("writes", 0)], ["op"], [["read"], ["write"]])
    yield _counter("quorumkv_requests_refused_total", "Requests refused before a round started, by reason.",
                   [g("invalid", 0), g("overloaded", 0), g("clock_refused_writes", 0)], ["reason"],
                   [["invalid"], ["overloaded"], ["clock_skew"]])
    yield _counter("quorumkv_replica_operations_total", "Replica reads and writes served for coordinators.",
                   [g("replica_reads", 0), g("replica_writes", 0)], ["op"], [["read"], ["write"]])
    yield _counter("quorumkv_read_repairs_total", "Stale replicas written back by read repair.", g("read_repairs", 0))
    yield _counter("quorumkv_speculative_retries_total", "Reads sent to one more replica for being slow.",
                   g("speculative_retries", 0))
    yield _counter("quorumkv_write_restamps_total", "Client writes re-stamped above a replica's newer version.",
                   g("write_restamps", 0))
    yield _counter("quorumkv_hinted_writes_total", "Writes sent to a fallback standing in for a down replica.",
                   g("hinted_writes", 0))
    yield _counter("quorumkv_hints_stored_total", "Hints stored here for other nodes.", g("hints_stored", 0))
    yield _counter("quorumkv_hints_replayed_total", "Hints delivered to their node, or handed to current replicas.",
                   [g("hints_replayed", 0), g("hints_handed_over", 0)], ["to"], [["owner"], ["replicas"]])
    yield _counter("quorumkv_hints_dropped_total", "Hints not kept or given up, by reason.",
                   [g("hints_dropped_bytes", 0), g("hints_dropped_age", 0), g("hints_refused_target", 0)],
                   ["reason"], [["bytes"], ["age"], ["refused_target"]])
    held = GaugeMetricFamily("quorumkv_hints_held", "Hints held here, per target node.", labels=["target"])
    held_b = GaugeMetricFamily("quorumkv_hints_held_bytes", "Bytes of hints held here, per target node.",
                               labels=["target"])
    for target, (count, size) in sorted(snap["hints"].items()):
        held.add_metric([target], count)
        held_b.add_metric([target], size)
    yield held
    yield held_b
    yield _counter("quorumkv_antientropy_keys_compared_total", "Keys compared by Merkle anti-entropy.",
                   g("ae_keys_compared", 0))
    yield _counter("quorumkv_antientropy_keys_repaired_total", "Keys anti-entropy pushed to or pulled from peers.",
                   [g("ae_keys_pushed", 0), g("ae_keys_pulled", 0)], ["direction"], [["pushed"], ["pulled"]])
    yield _counter("quorumkv_antientropy_sessions_total", "Anti-entropy sessions with a peer, by result.",
                   [g("ae_sessions", 0), g("ae_sessions_failed", 0)], ["result"], [["ok"], ["failed"]])
    yield _counter("quorumkv_tombstones_purged_total", "Tombstones garbage-collected here.", g("tombstones_purged", 0))
    yield _counter("quorumkv_stream_keys_total", "Ring-change streaming: keys scanned, sent and received.",
                   [g("stream_keys_scanned", 0), g("stream_keys_sent", 0), g("stream_keys_received", 0)],
                   ["direction"], [["scanned"], ["sent"], ["received"]])
    yield _counter("quorumkv_stream_failures_total", "Ring-change streaming batches that failed (retried).",
                   g("stream_failures", 0))
    yield _gauge("quorumkv_stream_pending_keys", "Keys a decommission still has to deliver.", g("stream_pending", 0))
    yield _gauge("quorumkv_stream_sources_remaining", "Sources a join or replace still has to stream from.",
                 max(g("stream_sources_total", 0) - g("stream_sources_done", 0), 0))
    yield _counter("quorumkv_scan_pages_total", "Cluster-wide SCAN pages coordinated here, by result.",
                   [g("scan_pages", 0), g("scan_pages_failed", 0)], ["result"], [["ok"], ["unavailable"]])
    yield _gauge("quorumkv_rounds_open", "Quorum rounds open on this coordinator.", g("rounds_open", 0))
    yield _counter("quorumkv_membership_changes_total", "Ring rebuilds after a membership change.",
                   g("membership_changes", 0))
    yield _counter("quorumkv_bad_input_total", "Connections closed for bad input (native and RESP).",
                   sh.get("bad_input", 0) + sh.get("bad_peer_frames", 0))
    yield _counter("quorumkv_internal_errors_total", "Ticks or peer responses that raised (bugs).",
                   sh.get("tick_errors", 0) + sh.get("peer_response_errors", 0))
    # security and backups (shell/auth.py, shell/tls.py, shell/snapshot.py)
    yield _counter("quorumkv_auth_total", "Authentications and refusals on the native and RESP ports, by result.",
                   [sh.get("auth_ok", 0), sh.get("auth_failed", 0), sh.get("auth_missing", 0), sh.get("auth_denied", 0)],
                   ["result"], [["ok"], ["bad_credentials"], ["missing"], ["permission_denied"]])
    yield _counter("quorumkv_peer_refused_total", "Internode messages refused from a connection that is not an "
                   "authenticated peer.", sh.get("peer_refused", 0))
    yield _counter("quorumkv_tls_refused_total", "Connections refused on a TLS port, by reason.",
                   [sh.get("tls_plaintext_refused", 0), sh.get("tls_handshake_failed", 0)],
                   ["reason"], [["plaintext"], ["handshake_failed"]])
    yield _counter("quorumkv_snapshots_total", "Snapshots (backups) taken here, by result.",
                   [sh.get("snapshots_taken", 0), sh.get("snapshots_failed", 0)], ["result"], [["ok"], ["failed"]])
    yield _gauge("quorumkv_snapshot_running", "1 while this node takes a snapshot.", sh.get("snapshot_running", 0))
    # peers, as this node sees them
    up = GaugeMetricFamily("quorumkv_peer_up", "1 while this node's failure detector sees the peer alive.",
                           labels=["peer"])
    phi = GaugeMetricFamily("quorumkv_peer_phi", "Phi-accrual suspicion of the peer (8 = suspect).", labels=["peer"])
    skew = GaugeMetricFamily("quorumkv_peer_clock_offset_seconds",
                             "The peer's wall clock minus ours, as its heartbeats measure it.", labels=["peer"])
    for node, _state, alive, phi_value, offset_ms in snap["peers"]:
        up.add_metric([node], 1 if alive else 0)
        phi.add_metric([node], phi_value if phi_value != float("inf") else 1e9)
        if offset_ms is not None:
            skew.add_metric([node], offset_ms / 1000)
    yield up
    yield phi
    yield skew
    yield _gauge("quorumkv_clock_offset_max_seconds", "Largest clock offset to a live peer.",
                 g("clock_offset_ms_max", 0) / 1000)
    yield _gauge("quorumkv_hlc_ahead_seconds", "How far this node's hybrid logical clock runs ahead of its wall clock.",
                 snap.get("hlc_ahead_ms", 0) / 1000)
    yield _gauge("quorumkv_ring_members", "Nodes in this node's ring.", len(snap["ring_nodes"]))
    own = GaugeMetricFamily("quorumkv_ring_ownership_ratio",
                            "Share of the key space each node replicates (sums to N).", labels=["node"])
    for node, share in sorted(snap["ownership"].items()):
        own.add_metric([node], share["effective"])
    yield own
    yield _gauge("quorumkv_ready", "1 while /ready answers 200.", 0 if readiness(snap) else 1)
    # storage
    yield _gauge("quorumkv_storage_keys", "Records in local storage (tombstones included).", snap["keys"])
    if snap["bytes"] >= 0:
        yield _gauge("quorumkv_storage_bytes", "Bytes of local storage on disk.", snap["bytes"])
    if snap["batch"] is not None:
        buckets, total = snap["batch"]
        fam = HistogramMetricFamily("quorumkv_storage_commit_batch_size",
                                    "Writes per group-commit transaction.")
        fam.add_metric([], buckets, total)
        yield fam
    # connections
    yield _gauge("quorumkv_inbound_connections", "Open native-protocol connections (clients and peers).",
                 snap["inbound"])
    yield _gauge("quorumkv_peer_links_up", "Outbound links to peers that are connected.", snap["links_up"])
    resp = snap["resp"]
    if resp is not None:
        yield _gauge("quorumkv_resp_connections", "Open RESP (Redis protocol) connections.",
                     resp.get("connected_clients", 0))
        yield _counter("quorumkv_resp_connections_received_total", "RESP connections accepted.",
                       resp.get("total_connections_received", 0))
        yield _counter("quorumkv_resp_commands_total", "RESP commands processed.",
                       resp.get("total_commands_processed", 0))
        yield _counter("quorumkv_resp_error_replies_total", "RESP error replies sent.",
                       resp.get("total_error_replies", 0))
    lat = HistogramMetricFamily("quorumkv_request_duration_seconds",
                                "Client request latency at the coordinator (receipt to reply), by op and level.",
                                labels=["op", "level"])
    for (op, level), (buckets, total) in sorted(snap["latency"].items()):
        lat.add_metric([op, level], buckets, total)
    yield lat


class NodeCollector:
    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        yield from families(self.server.metrics.take_snapshot())


# -------------------------------------------------------------------- server
class MetricsServer:
    """The HTTP listener of one NodeServer (``metrics_listen``)."""

    def __init__(self, server) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(server))
        self._metrics_app = make_wsgi_app(self.registry)
        self._httpd = None
        self._thread: threading.Thread | None = None

    def take_snapshot(self) -> dict:
        """A snapshot taken on the event loop (from the HTTP thread); raises
        TimeoutError when the loop does not answer within SNAPSHOT_TIMEOUT_MS."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                fut.set_result(snapshot(self.server, mono_ms()))
            except Exception as exc:  # noqa: BLE001 - handed to the scraping thread
                fut.set_exception(exc)

        self.server.loop.call_soon_threadsafe(take)
        return fut.result(timeout=SNAPSHOT_TIMEOUT_MS / 1000)

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path in ("/health", "/ready"):
            try:
                snap = self.take_snapshot()
            except Exception as exc:  # noqa: BLE001 - the loop is stuck or the node broken: not healthy
                return _text(start_response, "503 Service Unavailable", f"no answer from the node: {exc!r}\n")
            if path == "/health":
                return _text(start_response, "200 OK", "ok\n")
            why = readiness(snap)
            if why:
                return _text(start_response, "503 Service Unavailable", f"not ready: {why}\n")
            return _text(start_response, "200 OK", "ready\n")
        return self._metrics_app(environ, start_response)

    def start(self, listen: str) -> None:
        host, port = parse_address(listen)
        try:
            self._httpd = make_server(host, port, self.app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:  # say which listener: the node has three
            raise OSError(exc.errno, f"metrics_listen {listen}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics_listening", listen=listen)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


def _text(start_response, status: str, body: str):
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
