"""Shared subscriptions over real sockets, with paho-mqtt in both protocol versions."""

import queue
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from mqttish.protocol.packets import Publish, Subscribe, SubscriptionRequest
from tests.conftest import BrokerThread
from tests.wire.mqtt5 import props
from tests.wire.paho_client import V5, V311, PahoClient
from tests.wire.raw_client import RawClient

SHARE = "$share/workers/orders/#"
VERSIONS = pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5.0"])


Sink = queue.Queue[tuple[str, mqtt.MQTTMessage]]


def worker(port: int, name: str, protocol: int, sink: Sink | None = None,
           **kwargs: object) -> PahoClient:
    client = PahoClient(port, name, protocol=protocol, sink=sink, **kwargs)  # type: ignore[arg-type]
    client.subscribe(SHARE, 1)
    return client


def stalled_member(port: int, name: str) -> RawClient:
    """A member that receives but never acknowledges."""
    raw = RawClient(port)
    raw.connect(name)
    raw.send(Subscribe(1, (SubscriptionRequest(SHARE, 1),)))
    raw.receive()
    return raw


def collect(sink: Sink, total: int) -> dict[str, list[mqtt.MQTTMessage]]:
    """`total` messages from the shared sink, by the member that received them."""
    received: dict[str, list[mqtt.MQTTMessage]] = {}
    for _ in range(total):
        member, message = sink.get(timeout=10)
        received.setdefault(member, []).append(message)
    return received


def payloads(received: dict[str, list[mqtt.MQTTMessage]]) -> Counter[bytes]:
    return Counter(m.payload for messages in received.values() for m in messages)


@VERSIONS
def test_round_robin_spreads_evenly_and_ordinary_subscribers_get_all(
        broker: BrokerThread, protocol: int) -> None:
    sink: Sink = queue.Queue()
    for i in range(3):
        worker(broker.port, f"w{i}", protocol, sink)
    audit = PahoClient(broker.port, "audit", protocol=protocol)
    audit.subscribe("orders/#", 1)
    shop = PahoClient(broker.port, "shop", protocol=protocol)
    for i in range(300):
        shop.publish(f"orders/{i}", str(i).encode(), qos=1, wait=False)
    received = collect(sink, 300)
    assert payloads(received) == Counter(str(i).encode() for i in range(300))
    counts = {member: len(messages) for member, messages in received.items()}
    assert len(counts) == 3 and all(80 <= n <= 120 for n in counts.values()), counts
    assert len(audit.expect(300)) == 300


def test_least_loaded_avoids_a_stalled_member(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(shared_subscription_strategy="least_loaded", max_inflight_messages=5)
    stalled = stalled_member(broker.port, "stalled")
    sink: Sink = queue.Queue()
    for i in range(2):
        worker(broker.port, f"h{i}", V311, sink)
    shop = PahoClient(broker.port, "shop")
    for i in range(200):
        shop.publish(f"orders/{i}", str(i).encode(), qos=1, wait=False)
    stuck = [stalled.receive() for _ in range(5)]
    assert all(isinstance(p, Publish) for p in stuck)
    received = collect(sink, 195)
    assert sorted(received) == ["h0", "h1"]
    assert len(broker.call(lambda: broker.broker.sessions["stalled"].outgoing.flights)) == 5
    stuck_payloads = Counter(p.payload for p in stuck)  # type: ignore[union-attr]
    assert payloads(received) + stuck_payloads == Counter(str(i).encode() for i in range(200))


def test_sticky_keeps_each_topic_on_one_member(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(shared_subscription_strategy="sticky")
    sink: Sink = queue.Queue()
    for i in range(3):
        worker(broker.port, f"w{i}", V5, sink)
    shop = PahoClient(broker.port, "shop")
    for i in range(100):
        shop.publish(f"orders/device-{i % 10}", str(i).encode(), qos=1, wait=False)
    owners: dict[str, set[str]] = {}
    order: dict[str, list[int]] = {}
    for member, messages in collect(sink, 100).items():
        for message in messages:
            owners.setdefault(message.topic, set()).add(member)
            order.setdefault(message.topic, []).append(int(message.payload))
    assert len(owners) == 10
    assert all(len(members) == 1 for members in owners.values())
    assert all(values == sorted(values) for values in order.values())
    assert len(set().union(*owners.values())) > 1  # the topics are spread over members


@VERSIONS
def test_killed_member_unacknowledged_messages_reach_the_others(
        broker: BrokerThread, protocol: int) -> None:
    doomed = stalled_member(broker.port, "doomed")
    sink: Sink = queue.Queue()
    for i in range(2):
        worker(broker.port, f"s{i}", protocol, sink)
    shop = PahoClient(broker.port, "shop", protocol=protocol)
    for i in range(90):
        shop.publish(f"orders/{i}", str(i).encode(), qos=1)
    unacked = [doomed.receive() for _ in range(3)]
    assert all(isinstance(p, Publish) for p in unacked)
    doomed.close()
    received = collect(sink, 90)
    assert payloads(received) == Counter(str(i).encode() for i in range(90))
    redelivered = [m for ms in received.values() for m in ms if m.dup]
    assert {m.payload for m in redelivered} >= {p.payload for p in unacked}  # type: ignore[union-attr]


@VERSIONS
def test_messages_wait_while_persistent_members_are_offline(
        broker: BrokerThread, protocol: int) -> None:
    options: dict[str, object] = {"clean_session": False}
    if protocol == V5:  # persistent: clean start off and a session expiry interval
        options = {"clean_start": False,
                   "properties": props("CONNECT", SessionExpiryInterval=3600)}
    member = worker(broker.port, "nightshift", protocol, **options)
    member.disconnect()
    broker.disconnects.wait("nightshift")
    shop = PahoClient(broker.port, "shop", protocol=protocol)
    for i in range(10):
        shop.publish(f"orders/{i}", str(i).encode(), qos=1)
    back = PahoClient(broker.port, "nightshift", protocol=protocol, **options)  # type: ignore[arg-type]
    assert sorted(int(m.payload) for m in back.expect(10)) == list(range(10))
