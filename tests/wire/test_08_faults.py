"""Misbehaving clients are logged and closed; a healthy client carries on unharmed."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from mqttish.protocol.packets import Publish, Subscribe, SubscriptionRequest
from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


class Healthy:
    """A client publishing and receiving its own messages in a loop during the test."""

    def __init__(self, port: int) -> None:
        self.client = PahoClient(port, "healthy")
        self.client.subscribe("healthy/#", 1)
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.client.publish(f"healthy/{self.count}", b"ok", qos=1)
            assert self.client.expect()[0].topic == f"healthy/{self.count}"
            self.count += 1

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.count


@pytest.fixture
def healthy(broker: BrokerThread) -> Iterator[Healthy]:
    client = Healthy(broker.port)
    yield client
    assert client.finish() > 0


def test_garbage_is_logged_and_closed(start_broker, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
                                      ) -> None:
    caplog.set_level(logging.WARNING, "mqttish")
    broker = start_broker(connect_timeout=1.0)
    healthy = Healthy(broker.port)
    garbage = [RawClient(broker.port) for _ in range(20)]
    for raw in garbage:
        raw.send(os.urandom(200))
    # Each is closed at once, or after the connect timeout if its bytes began like a packet.
    assert all(raw.closed_by_broker() for raw in garbage)
    connected = RawClient(broker.port)
    connected.connect("garbage-after-connect")
    connected.send(b"\x00\x05hello")
    assert connected.closed_by_broker()
    assert "packet type 0 is reserved" in caplog.text
    assert healthy.finish() > 0


def test_silent_connection_is_closed(start_broker, ) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(connect_timeout=0.5)
    healthy = Healthy(broker.port)
    silent = socket.create_connection(("127.0.0.1", broker.port))
    silent.settimeout(5)
    assert silent.recv(10) == b""
    assert healthy.finish() > 0


def test_disconnect_in_the_middle_of_a_packet(broker: BrokerThread, healthy: Healthy) -> None:
    for _ in range(10):
        raw = RawClient(broker.port)
        raw.connect("half")
        raw.send(b"\x30\x7f\x00\x03a/b partial")
        raw.close()
    raw = RawClient(broker.port)
    raw.send(b"\x10\x0e\x00\x04MQ")  # half a CONNECT
    raw.close()


def test_oversize_packet_closes_only_that_client(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_packet_size=1024)
    healthy = Healthy(broker.port)
    big = RawClient(broker.port)
    big.connect("big")
    big.send(Publish("big", b"x" * 2000))
    assert big.closed_by_broker()
    assert healthy.finish() > 0


def test_slow_subscriber_does_not_slow_publishers(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_queued_messages=100, stall_timeout=0.5)
    stalled = RawClient(broker.port)
    stalled.connect("stalled")
    stalled.send(Subscribe(1, (SubscriptionRequest("flood", 0),)))
    stalled.receive()  # SUBACK; from now on it never reads
    reader = PahoClient(broker.port, "reader")
    reader.subscribe("flood", 0)
    publisher = PahoClient(broker.port, "publisher")
    payload = b"x" * 10_000
    # 20 MB in batches the healthy reader keeps up with: far more than the stalled
    # client's socket buffers and queue hold. The publisher waits for it at most
    # stall_timeout; then the broker drops for it alone.
    for batch in range(40):
        for _ in range(50):
            publisher.publish("flood", payload, qos=0, wait=False)
        publisher.publish("flood", str(batch).encode(), qos=1)
        received = reader.expect(51, timeout=30)
        assert received[-1].payload == str(batch).encode()
    dropped = broker.call(lambda: broker.broker.metrics.publish_dropped)
    assert dropped > 0
    assert broker.broker.metrics.consumers_stalled == 1


def test_client_that_never_reads_its_acks_is_held_back(broker: BrokerThread) -> None:
    """A publisher that does not read costs bounded memory: the broker stops reading it."""
    from mqttish.core.connection import REPLY_BACKLOG

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.connect(("127.0.0.1", broker.port))
    sock.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02gr")
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    chunk = b"".join(b"\x32\x06\x00\x01t" + (i + 1).to_bytes(2, "big") + b"x"
                     for i in range(8192))  # 64 KiB of QoS 1 PUBLISH
    sock.setblocking(False)
    sent = 0
    with contextlib.suppress(BlockingIOError):  # the broker stopped reading: as it should
        while sent < 200 * len(chunk):
            sent += sock.send(chunk)
    assert sent < 200 * len(chunk)
    backlog = broker.call(lambda: len(broker.broker.sessions["gr"].connection._out))
    assert backlog <= REPLY_BACKLOG
    healthy = PahoClient(broker.port, "healthy")  # and the broker serves others meanwhile
    healthy.subscribe("t", 0)
    sock.close()
