"""Snapshots of one node's storage, taken while it serves, and restoring them.

A snapshot is a directory ``<data_dir>/snapshots/<tag>/`` on the node's host (like
Cassandra's ``nodetool snapshot``, which leaves hard links next to the data) with:

* ``kv.sqlite3`` — the records (values and tombstones), hints and the HLC ceiling,
  in the SQLite engine's own schema, whatever engine the node runs;
* ``node-state.json`` — the node's saved membership (a node that joined through
  ``--seed`` must come back as a member, not join again), when it has one;
* ``manifest.json`` — node id, engine, the point in time (``taken_ms``), key count,
  size, format version. Written last: a directory without it is incomplete.

How the point in time is fixed, per engine:

* SQLite: the online backup API (``sqlite3.Connection.backup``) copying
  ``SNAPSHOT_PAGES_PER_STEP`` pages per step, from a connection that holds one read
  transaction open for the whole copy. In WAL mode writers carry on meanwhile, and
  the copy is exactly the database as of that transaction's start — without the
  open transaction every commit by the node's writer would restart the backup,
  which under steady write load never finishes.
* Memory: the dict's items are copied on the event loop (atomic: nothing else runs),
  then dumped into a SQLite file on a worker thread.
* Redis: a SCAN of the node's keys, dumped the same way. Not a single point in time:
  every write acknowledged before the snapshot started is in it (with that version
  or a newer one); writes during the scan may or may not be.

Every write the node acknowledged before ``taken_ms`` is in its snapshot (persist
before ack). Restoring is offline: ``restore_node_dir`` puts the files back into a
stopped node's data directory (docs/operations.md, "Backup and restore").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time

import structlog

from .storage import _SCHEMA, SqliteEngine

log = structlog.get_logger("quorumkv.snapshot")

#: Pages copied per backup step (4 KiB pages: 1 MiB a step). Between steps the
#: progress counters move; each step holds the source's read lock only briefly.
SNAPSHOT_PAGES_PER_STEP = 256
#: Records per INSERT batch when dumping a memory or Redis engine.
DUMP_BATCH_ROWS = 1_000
#: Snapshot directory format (manifest ``format``).
SNAPSHOT_FORMAT = 1
#: A snapshot tag: a file name, no path separators, no leading dot.
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

DB_NAME = "kv.sqlite3"
MANIFEST = "manifest.json"
STATE_FILE = "node-state.json"


class SnapshotError(Exception):
    """A snapshot or restore that cannot be done; the message says why."""


def validate_tag(tag: str) -> str:
    if not TAG_RE.match(tag or ""):
        raise SnapshotError(f"bad snapshot tag {tag!r}: 1-64 of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    return tag


def default_tag(now_s: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now_s is None else now_s))


def snapshot_dir(data_dir: str, tag: str) -> str:
    return os.path.join(data_dir, "snapshots", validate_tag(tag))


class Progress:
    """Progress a worker thread reports into a stats dict that ``Status`` replies carry
    (``snapshot_done`` / ``snapshot_total``: pages for SQLite, records otherwise).
    Plain int stores: a poll between two of them sees one sample slightly off."""

    def __init__(self, stats: dict | None = None) -> None:
        self.stats = stats if stats is not None else {}
        self.done = self.total = 0

    def __setattr__(self, name, value) -> None:
        object.__setattr__(self, name, value)
        if name in ("done", "total"):
            self.stats[f"snapshot_{name}"] = value


def backup_sqlite(src_path: str, dest_path: str, progress: Progress) -> int:
    """Copy the live database at ``src_path`` to ``dest_path`` (SQLite online backup,
    consistent as of one read transaction); returns the wall-clock ms of that point."""
    src = sqlite3.connect(src_path, isolation_level=None, check_same_thread=False)
    try:
        src.execute("BEGIN")
        src.execute("SELECT 1 FROM kv LIMIT 1").fetchall()  # the read transaction starts here
        taken_ms = int(time.time() * 1000)
        dst = sqlite3.connect(dest_path)
        try:
            def step(status, remaining, total):
                progress.total = total
                progress.done = total - remaining

            src.backup(dst, pages=SNAPSHOT_PAGES_PER_STEP, progress=step, sleep=0)
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()
    return taken_ms


def dump_records(items, dest_path: str, progress: Progress, expected: int = 0) -> int:
    """Write ``(key, record)`` pairs into a fresh SQLite file in the engine's schema;
    returns how many."""
    from .storage import _UPSERT, _ctx_encode  # noqa: PLC0415 - the engine's own row encoding

    progress.total = expected
    conn = sqlite3.connect(dest_path, isolation_level=None)
    try:
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        batch, count = [], 0
        for key, rec in items:
            v = rec.version
            batch.append((key, v.ts, v.node, rec.value, _ctx_encode(v.ctx) if v.ctx is not None else None,
                          rec.expires_ms))
            if len(batch) >= DUMP_BATCH_ROWS:
                conn.executemany(_UPSERT, batch)
                count += len(batch)
                progress.done = count
                batch = []
        conn.executemany(_UPSERT, batch)
        count += len(batch)
        progress.done = count
        progress.total = max(progress.total, count)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return count


def finish(dest_dir: str, manifest: dict, state_file: str | None) -> dict:
    """Count what the snapshot holds, copy the node state, write the manifest last."""
    db = os.path.join(dest_dir, DB_NAME)
    conn = sqlite3.connect(db)
    try:
        manifest["keys"] = conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        manifest["hlc_max"] = conn.execute("SELECT COALESCE(MAX(ts), 0) FROM kv").fetchone()[0]
    finally:
        conn.close()
    manifest["bytes"] = os.path.getsize(db)
    manifest["format"] = SNAPSHOT_FORMAT
    if state_file and os.path.exists(state_file):
        shutil.copyfile(state_file, os.path.join(dest_dir, STATE_FILE))
    tmp = os.path.join(dest_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(dest_dir, MANIFEST))
    return manifest


def read_manifest(snap_dir: str) -> dict:
    path = os.path.join(snap_dir, MANIFEST)
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise SnapshotError(f"{snap_dir}: no {MANIFEST} (not a snapshot, or an incomplete one)") from None
    except ValueError as exc:
        raise SnapshotError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: unknown snapshot format {manifest.get('format')!r}")
    if not os.path.exists(os.path.join(snap_dir, DB_NAME)):
        raise SnapshotError(f"{snap_dir}: {DB_NAME} missing")
    return manifest


def restore_node_dir(snap_dir: str, data_dir: str, *, node_id: str | None = None) -> dict:
    """Put a snapshot back into a *stopped* node's ``data_dir`` (SQLite engine): the
    database and WAL files there are replaced, the saved node state too. Returns the
    manifest. Checks the snapshot is this node's (``node_id``)."""
    manifest = read_manifest(snap_dir)
    if node_id is not None and manifest.get("node") != node_id:
        raise SnapshotError(f"{snap_dir} is a snapshot of {manifest.get('node')!r}, not of {node_id!r}")
    target = os.path.join(data_dir, "data")
    os.makedirs(target, exist_ok=True)
    db = os.path.join(target, DB_NAME)
    tmp = db + ".restore"
    shutil.copyfile(os.path.join(snap_dir, DB_NAME), tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    for suffix in ("-wal", "-shm"):  # the old database's log must not be replayed onto the snapshot
        try:
            os.remove(db + suffix)
        except FileNotFoundError:
            pass
    os.replace(tmp, db)
    state = os.path.join(snap_dir, STATE_FILE)
    if os.path.exists(state):
        shutil.copyfile(state, os.path.join(target, STATE_FILE))
    # Open it once as the engine would: WAL mode, schema current, readable.
    SqliteEngine(db, fsync=True).close()
    return manifest


class SnapshotShell:
    """A node's side of ``Snapshot``: at most one at a time, on a worker thread; the
    reply goes back on the requesting connection when the snapshot is complete."""

    def __init__(self, server) -> None:
        self.server = server
        self.progress: Progress | None = None
        stats = server.stats
        for name in ("snapshots_taken", "snapshots_failed", "snapshot_running", "snapshot_done",
                     "snapshot_total"):
            stats.setdefault(name, 0)

    def on_request(self, conn, msg, now: int, out: list) -> None:
        from ..core.effects import Respond  # noqa: PLC0415
        from ..core.messages_admin import SnapshotReply  # noqa: PLC0415

        server = self.server
        node = server.config.node_id
        try:
            dest = snapshot_dir(server.config.data_dir, msg.tag)
            if self.progress is not None:
                raise SnapshotError("a snapshot is already running on this node (one at a time)")
            if os.path.exists(dest):
                raise SnapshotError(f"snapshot {msg.tag!r} already exists on {node} ({dest})")
        except SnapshotError as exc:
            server.stats["snapshots_failed"] += 1
            out.append(Respond(conn, SnapshotReply(msg.id, False, str(exc), node)))
            return
        progress = self.progress = Progress(server.stats)
        server.stats["snapshot_running"] = 1
        engine = server.storage
        items = None
        if engine.name == "memory":  # copied here, on the loop: a true point in time
            items = list(engine.scan_all())
        taken_ms = int(time.time() * 1000)

        def work() -> dict:
            tmp = dest + ".partial"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            db = os.path.join(tmp, DB_NAME)
            if engine.name == "sqlite":
                point_ms = backup_sqlite(engine.path, db, progress)
            else:
                point_ms = taken_ms
                dump_records(items if items is not None else engine.scan_all(), db, progress, len(items or ()))
            manifest = finish(tmp, {"node": node, "tag": msg.tag, "storage": engine.name, "taken_ms": point_ms,
                                    "members": server.core.members(), "listen": server.config.listen},
                              os.path.join(server.config.data_dir, "data", STATE_FILE))
            os.replace(tmp, dest)
            return manifest

        def done(job) -> None:
            self.progress = None
            server.stats["snapshot_running"] = 0
            exc = job.exception()
            if exc is not None:
                server.stats["snapshots_failed"] += 1
                log.error("snapshot_failed", tag=msg.tag, error=repr(exc))
                reply = SnapshotReply(msg.id, False, f"snapshot failed on {node}: {exc}", node)
            else:
                man = job.result()
                server.stats["snapshots_taken"] += 1
                log.info("snapshot_taken", tag=msg.tag, path=dest, keys=man["keys"], bytes=man["bytes"])
                reply = SnapshotReply(msg.id, True, "", node, dest, man["keys"], man["bytes"], man["taken_ms"])
            server.run([Respond(conn, reply)])

        server.loop.run_in_executor(None, work).add_done_callback(done)


__all__ = ["SnapshotShell", "SnapshotError", "Progress", "backup_sqlite", "dump_records", "finish", "read_manifest",
           "restore_node_dir", "snapshot_dir", "validate_tag", "default_tag"]
