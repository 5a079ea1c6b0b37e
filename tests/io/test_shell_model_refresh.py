"""The dynamic-quorum model is rebuilt often only while it is in use."""

from __future__ import annotations

import asyncio

from quorumkv.core.dynamic import PBS_SAMPLES_MIN
from quorumkv.shell.config import NodeConfig
from quorumkv.shell.server import NodeServer
from quorumkv.cli.testing import free_base_port


def samples(server, count: int) -> None:
    for i in range(count):
        server.latency.add(i % 2 == 0, 1_000, 1_500 + i % 7, 2_000 + i % 11)


def test_model_rebuilds_while_in_use_and_rarely_otherwise(tmp_path):
    async def main():
        port = free_base_port(1)
        listen = f"127.0.0.1:{port}"
        server = NodeServer(NodeConfig(node_id="n1", listen=listen, data_dir=str(tmp_path), storage="memory", n=1))
        builds = []

        def tick_and_wait():
            server._model_tick()
            server._model_handle.cancel()  # drive it by hand
            job = server._model_job
            builds.append(job is not None)
            return job

        samples(server, 4 * PBS_SAMPLES_MIN)
        job = tick_and_wait()  # not ready yet: builds at once
        assert job is not None
        await job
        await asyncio.sleep(0)
        assert server.core.latency_model.ready
        samples(server, 10)
        assert tick_and_wait() is None  # ready and nobody uses it: waits for the idle refresh
        server.core.stats["dynamic_requests"] = 1  # a request with a target arrived
        job = tick_and_wait()
        assert job is not None
        await job
        await asyncio.sleep(0)
        samples(server, 10)
        job = tick_and_wait()  # still in use: the next batch of samples rebuilds at once
        assert job is not None
        await job
        assert builds == [True, False, True, True]
        server.storage.close()

    asyncio.run(main())
