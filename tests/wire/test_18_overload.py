"""Bursts and overload: a healthy consumer loses nothing; a stalled one holds no one back.

Also input from different clients takes effect in the order it arrived (issue #12).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from mqttish.protocol.packets import (
    MQTT_5,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    SubscriptionRequest,
)
from tests.conftest import BrokerThread, missing, websocket_listeners
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient

BURST = 5000


def _needs_mosquitto_clients() -> None:
    if shutil.which("mosquitto_pub") is None:
        missing("mosquitto-clients not installed")


@pytest.mark.parametrize("qos", ["0", "1"])
def test_a_burst_reaches_an_idle_subscriber_whole(broker: BrokerThread, qos: str) -> None:
    """`seq 5000 | mosquitto_pub -l` into a queue of 1000: it lost up to 80% before."""
    _needs_mosquitto_clients()
    port = str(broker.port)
    PahoClient(broker.port, "marker").publish("burst/ready", b"go", qos=1, retain=True)
    sub = subprocess.Popen(["mosquitto_sub", "-p", port, "-q", qos, "-t", "burst/ready",
                            "-t", "burst/t", "-C", str(BURST + 1), "-W", "60"],
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    assert sub.stdout.readline() == "go\n"  # retained: the subscription is live
    lines = "".join(f"{n}\n" for n in range(1, BURST + 1))
    subprocess.run(["mosquitto_pub", "-p", port, "-q", qos, "-M", "1000", "-l", "-t", "burst/t"],
                   input=lines, text=True, check=True, timeout=60)
    received = sub.stdout.read().split()
    assert sub.wait(60) == 0
    assert received == [str(n) for n in range(1, BURST + 1)]  # all, in order
    assert broker.broker.metrics.publish_dropped == 0


def test_a_subscribe_takes_effect_before_a_later_publish(broker: BrokerThread) -> None:
    """B subscribes, A publishes right after without waiting: B gets it, every time."""
    for attempt in range(30):
        a = RawClient(broker.port, MQTT_5)
        a.connect(f"a{attempt}")
        a.send(Subscribe(1, (SubscriptionRequest("race", 2, no_local=True),)))
        assert isinstance(a.receive(), SubAck)
        b = RawClient(broker.port, MQTT_5)
        b.connect(f"b{attempt}")
        b.send(Subscribe(1, (SubscriptionRequest("race", 2, no_local=True),)))
        a.send(Publish("race", str(attempt).encode(), 1, packet_id=1))
        assert isinstance(b.receive(), SubAck)
        delivered = b.receive()
        assert isinstance(delivered, Publish), f"attempt {attempt}: {delivered!r}"
        assert delivered.payload == str(attempt).encode()
        a.close()
        b.close()


class _Reader:
    """A QoS 1 subscriber that acknowledges each message after `delay` seconds."""

    def __init__(self, port: int, client_id: str, delay: float, expected: int) -> None:
        self.client = RawClient(port)
        self.client.connect(client_id)
        self.client.send(Subscribe(1, (SubscriptionRequest("load/#", 1),)))
        assert isinstance(self.client.receive(), SubAck)
        self.delay = delay
        self.expected = expected
        self.payloads: list[bytes] = []
        self.done = threading.Event()  # all expected messages arrived
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (packet := self.client.receive(timeout=30)) is not None:
            assert isinstance(packet, Publish)
            self.payloads.append(packet.payload)
            if len(self.payloads) == self.expected:
                self.done.set()
            if self.delay:
                time.sleep(self.delay)  # a slow consumer, not synchronisation
            self.client.send(PubAck(packet.packet_id or 0))


def _publish(port: int, client_id: str, count: int, inflight: int) -> list[float]:
    """Publish `count` QoS 1 messages as fast as PUBACKs allow; return each one's wait."""
    client = RawClient(port)
    client.connect(client_id)
    sent_at: dict[int, float] = {}
    waits: list[float] = []
    next_id = 1
    while len(waits) < count:
        while len(sent_at) < inflight and next_id <= count:
            sent_at[next_id] = time.monotonic()
            client.send(Publish(f"load/{client_id}", str(next_id).encode(), 1, packet_id=next_id))
            next_id += 1
        ack = client.receive()
        assert isinstance(ack, PubAck)
        waits.append(time.monotonic() - sent_at.pop(ack.packet_id))
    client.close()
    return waits


def test_publishers_wait_for_a_slow_but_healthy_subscriber(
        start_broker: Callable[..., BrokerThread]) -> None:
    """No end-to-end window: publishers go as fast as PUBACKs come. Nothing is lost."""
    broker = start_broker(max_queued_messages=100)
    counts = 2000
    reader = _Reader(broker.port, "slow", delay=0.0005, expected=3 * counts)
    threads = [threading.Thread(target=_publish, args=(broker.port, f"p{i}", counts, 50))
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert reader.done.wait(30)
    assert len(set(reader.payloads)) <= counts and len(reader.payloads) == 3 * counts
    assert broker.broker.metrics.publish_dropped == 0
    assert broker.broker.metrics.consumers_stalled == 0


def test_a_stalled_subscriber_holds_publishers_no_longer_than_the_stall_timeout(
        start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(max_queued_messages=50, stall_timeout=1.0)
    stuck = RawClient(broker.port)
    stuck.connect("stuck")
    stuck.send(Subscribe(1, (SubscriptionRequest("load/#", 1),)))
    assert isinstance(stuck.receive(), SubAck)  # from now on it reads nothing
    healthy = _Reader(broker.port, "healthy", delay=0.0, expected=3000)
    waits = _publish(broker.port, "p", 3000, 50)
    assert healthy.done.wait(30)  # the healthy one lost nothing
    assert max(waits) < 1.0 + 2.0  # held once, for the stall timeout (and some slack)
    metrics = broker.broker.metrics
    assert metrics.consumers_stalled == 1
    assert metrics.publish_dropped > 0  # the stuck one's overflow, counted
    stuck.close()


@pytest.mark.parametrize("transports", [("tcp", "tcp"), ("websockets", "websockets"),
                                        ("tcp", "websockets")])
def test_two_clients_flooding_each_other_both_get_everything(
        start_broker: Callable[..., BrokerThread], transports: tuple[str, str]) -> None:
    """Each publishes to the other as fast as it may, into queues of 10: each is held by
    the other's full queue, and is still read for the acknowledgements that queue waits
    for, over TCP (the multiplexer) and WebSocket (a task per connection) alike. Neither
    stalls, nothing is dropped, both get everything in order."""
    broker = start_broker(listeners=websocket_listeners(), max_queued_messages=10,
                          max_inflight_messages=2)
    ports = dict(zip(("tcp", "websockets"), broker.ports, strict=True))
    a = PahoClient(ports[transports[0]], "a", transport=transports[0])
    b = PahoClient(ports[transports[1]], "b", transport=transports[1])
    try:
        a.subscribe("to/a", 1)
        b.subscribe("to/b", 1)
        count = 400
        for n in range(count):
            a.publish("to/b", str(n), qos=1, wait=False)
            b.publish("to/a", str(n), qos=1, wait=False)
        expected = [str(n).encode() for n in range(count)]
        assert [m.payload for m in a.expect(count, timeout=30)] == expected
        assert [m.payload for m in b.expect(count, timeout=30)] == expected
    finally:
        a.disconnect()
        b.disconnect()
    assert broker.broker.metrics.publish_dropped == 0
    assert broker.broker.metrics.consumers_stalled == 0
