"""Nodes of a cluster as subprocesses, on a real redis-server, and what tests wait for."""

from __future__ import annotations

import itertools
import signal
from collections import Counter
from pathlib import Path

import trio

from mqttish.client import Client
from tests.e2e.broker_process import BrokerProcess, free_port

LEASE = 1.0  # seconds: a killed node is declared dead quickly
_prefixes = itertools.count()


class Cluster:
    """`size` nodes sharing one Redis under a key prefix of their own."""

    def __init__(self, tmp_path: Path, redis_url: str, size: int = 3, *,
                 websocket: bool = False, sys_interval: float = 0) -> None:
        self.prefix = f"c{next(_prefixes)}"
        self.ports = [free_port() for _ in range(size)]
        self.ws_ports = [free_port() for _ in range(size)] if websocket else []
        self.configs = []
        for index, port in enumerate(self.ports):
            config = tmp_path / f"node{index}.yaml"
            listeners = f"  - port: {port}\n"
            if websocket:
                listeners += f"  - port: {self.ws_ports[index]}\n    protocol: websocket\n"
            config.write_text(
                f"listeners:\n{listeners}sys_interval: {sys_interval}\nconnect_timeout: 10\n"
                f"cluster:\n  redis: {redis_url}\n  node_id: n{index}\n  lease: {LEASE}\n"
                f"  prefix: {self.prefix}\n")
            self.configs.append(config)
        self.nodes: list[BrokerProcess | None] = [None] * size

    async def start(self) -> Cluster:
        for index in range(len(self.ports)):
            self.nodes[index] = BrokerProcess("-c", str(self.configs[index]))
        for node in self.nodes:
            assert node is not None
            await trio.to_thread.run_sync(node.wait_for, "listening on 127", 30.0)
        return self

    def kill(self, index: int) -> None:
        """SIGKILL: no goodbye, no last commit."""
        node = self.nodes[index]
        assert node is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node is not None:
                try:
                    node.wait(15)
                except Exception:
                    node.kill()

    def log(self, index: int) -> str:
        node = self.nodes[index]
        return node.text() if node is not None else ""


WAIT = 20.0  # seconds a test waits for what it expects


class Received:
    """What subscribers got, by payload; waiting for payloads wakes at each arrival.
    `also`: another Received that counts the same messages (the union of a group)."""

    def __init__(self, also: Received | None = None) -> None:
        self.counts: Counter[bytes] = Counter()
        self.also = also
        self._changed = trio.Event()

    def add(self, payload: bytes) -> None:
        self.counts[payload] += 1
        self._changed.set()
        self._changed = trio.Event()
        if self.also is not None:
            self.also.add(payload)

    async def consume(self, client: Client) -> None:
        async for message in client.messages():
            self.add(message.payload)

    async def wait_for(self, payloads: set[bytes] | list[bytes]) -> None:
        wanted = set(payloads)
        with trio.fail_after(WAIT):
            while not wanted <= set(self.counts):
                await self._changed.wait()


class Acknowledged:
    """The payloads a publisher got acknowledged, in order, and a way to wait for more."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._changed = trio.Event()

    def append(self, payload: bytes) -> None:
        self.payloads.append(payload)
        self._changed.set()
        self._changed = trio.Event()

    async def reach(self, count: int) -> None:
        with trio.fail_after(WAIT):
            while len(self.payloads) < count:
                await self._changed.wait()


async def until_received(publisher: Client, received: Received, topic: str) -> None:
    """Publish probes on `topic` until one arrives: a subscription made on one node reaches
    the others asynchronously (a Redis broadcast), and this is how a test knows it has."""
    with trio.fail_after(WAIT):
        for number in itertools.count():
            payload = f"probe-{number}".encode()
            await publisher.publish(topic, payload, qos=0)
            with trio.move_on_after(0.05):
                await received.wait_for({payload})
                return
