"""`mqttish --workers 2`: two processes share the port as one broker (issue #17).

Without `cluster.redis` in the configuration, the supervisor runs a private
redis-server on a Unix socket; clients land on either worker and still
reach each other; a killed worker is started again; SIGTERM stops it all.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import trio

from mqttish.client import Client
from tests.conftest import missing
from tests.e2e.broker_process import BrokerProcess, free_port
from tests.e2e.cluster_nodes import Received, until_received


def _pids(text: str) -> dict[int, int]:
    """Worker number -> pid, from the supervisor's log lines (the latest start wins)."""
    return {int(n): int(pid) for n, pid in re.findall(r"worker (\d) started \(pid (\d+)\)", text)}


async def test_two_workers_share_a_port_and_act_as_one_broker(tmp_path: Path) -> None:
    if shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}:/usr/bin") is None:
        missing("redis-server is not installed")
    port = free_port()
    config = tmp_path / "workers.yaml"
    config.write_text(f"listeners:\n  - port: {port}\nsys_interval: 0\n")
    supervisor = BrokerProcess("-c", str(config), "--workers", "2")
    try:
        redis_line = await trio.to_thread.run_sync(supervisor.wait_for, "private redis-server")
        socket_path = Path(redis_line.rsplit(" on ", 1)[1].strip())
        for _ in range(2):
            await trio.to_thread.run_sync(supervisor.wait_for, "listening on 127", 30.0)
        received = Received()
        async with Client("127.0.0.1", port, client_id="watcher") as watcher, \
                trio.open_nursery() as nursery:
            nursery.start_soon(received.consume, watcher)
            await watcher.subscribe("w/#", qos=1)
            # Connections spread over both workers; every publisher reaches the watcher.
            for number in range(8):
                async with Client("127.0.0.1", port, client_id=f"p{number}") as publisher:
                    await until_received(publisher, received, "w/probe")
                    await publisher.publish("w/x", f"from-{number}".encode(), qos=1)
            await received.wait_for([f"from-{n}".encode() for n in range(8)])
            nursery.cancel_scope.cancel()
        text = supervisor.text()
        assert text.count("connected from") >= 9
        assert len(set(re.findall(r"cluster node (\S+) joined", text))) == 2
        # A worker that dies is started again.
        first = _pids(text)[1]
        os.kill(first, signal.SIGKILL)
        await trio.to_thread.run_sync(supervisor.wait_for, "worker 1 (pid", 30.0)
        await trio.to_thread.run_sync(supervisor.wait_for, "listening on 127", 30.0)
        assert _pids(supervisor.text())[1] != first
        supervisor.process.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(supervisor.wait, 30.0) == 0
        assert not await trio.Path(socket_path).exists()  # the private Redis went with it
    finally:
        supervisor.kill()


def test_workers_need_fixed_ports(tmp_path: Path) -> None:
    config = tmp_path / "zero.yaml"
    config.write_text("listeners:\n  - port: 0\n")
    supervisor = BrokerProcess("-c", str(config), "--workers", "2")
    assert supervisor.wait(30) == 2
    assert "needs fixed ports" in supervisor.text()


@pytest.mark.parametrize("workers", ["0", "300"])
def test_workers_outside_the_limits_are_refused(workers: str) -> None:
    supervisor = BrokerProcess("--workers", workers, "-p", str(free_port()))
    assert supervisor.wait(30) == 2
    assert "workers: must be between 1 and 256" in supervisor.text()


def test_a_node_that_cannot_reach_redis_says_so(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"listeners:\n  - port: {free_port()}\n"
                      f"cluster:\n  redis: unix://{tmp_path}/no-redis.sock\n")
    node = BrokerProcess("-c", str(config))
    assert node.wait(30) == 1
    assert "mqttish: cannot join the cluster: Redis at unix://" in node.text()
