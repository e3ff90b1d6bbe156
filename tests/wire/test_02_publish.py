"""PUBLISH at QoS 0, 1 and 2 in both directions, QoS downgrade, ordering."""

import pytest

from mqttish.protocol.packets import PubAck, PubComp, Publish, PubRec, PubRel, Subscribe
from mqttish.protocol.packets import SubscriptionRequest as Request
from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


@pytest.mark.parametrize("published", [0, 1, 2])
@pytest.mark.parametrize("granted", [0, 1, 2])
def test_delivered_qos_is_the_minimum(broker: BrokerThread, published: int, granted: int) -> None:
    sub = PahoClient(broker.port, "sub")
    assert sub.subscribe("q/t", granted) == [granted]
    pub = PahoClient(broker.port, "pub")
    pub.publish("q/t", b"payload", qos=published)
    [message] = sub.expect()
    assert message.qos == min(published, granted)
    assert message.payload == b"payload"


def test_qos1_and_qos2_acknowledgement_flows_on_the_wire(broker: BrokerThread) -> None:
    sub = RawClient(broker.port)
    sub.connect("sub")
    sub.send(Subscribe(1, (Request("flow/#", 2),)))
    sub.receive()
    pub = RawClient(broker.port)
    pub.connect("pub")
    pub.send(Publish("flow/1", b"a", 1, packet_id=3))
    assert pub.receive() == PubAck(3)
    pub.send(Publish("flow/2", b"b", 2, packet_id=4))
    assert pub.receive() == PubRec(4)
    pub.send(PubRel(4))
    assert pub.receive() == PubComp(4)
    one = sub.receive()
    assert isinstance(one, Publish) and one.qos == 1
    sub.send(PubAck(one.packet_id))  # type: ignore[arg-type]
    two = sub.receive()
    assert isinstance(two, Publish) and two.qos == 2
    sub.send(PubRec(two.packet_id))  # type: ignore[arg-type]
    assert sub.receive() == PubRel(two.packet_id)  # type: ignore[arg-type]
    sub.send(PubComp(two.packet_id))  # type: ignore[arg-type]


def test_qos2_resent_with_dup_before_pubrel_is_delivered_once(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("once", 2)
    pub = RawClient(broker.port)
    pub.connect("pub")
    pub.send(Publish("once", b"exactly", 2, packet_id=9))
    assert pub.receive() == PubRec(9)
    pub.send(Publish("once", b"exactly", 2, dup=True, packet_id=9))
    assert pub.receive() == PubRec(9)
    pub.send(PubRel(9))
    assert pub.receive() == PubComp(9)
    pub.send(Publish("once", b"barrier", 0))
    # paho hands a QoS 2 message over after its PUBREL: the barrier may overtake it.
    assert sorted(m.payload for m in sub.expect(2)) == [b"barrier", b"exactly"]


def test_order_preserved_per_publisher_and_topic(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("ordered/#", 1)
    pub = PahoClient(broker.port, "pub")
    for i in range(200):
        pub.publish(f"ordered/{i % 2}", str(i).encode(), qos=i % 2, wait=False)
    received = sub.expect(200)
    for topic in ("ordered/0", "ordered/1"):
        values = [int(m.payload) for m in received if m.topic == topic]
        assert values == sorted(values) and len(values) == 100


def test_overlapping_subscriptions_deliver_once_at_highest_qos(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("home/#", 0)
    sub.subscribe("home/+/temp", 1)
    sub.subscribe("home/kitchen/temp", 2)
    pub = PahoClient(broker.port, "pub")
    pub.publish("home/kitchen/temp", b"21", qos=2)
    pub.publish("home/barrier", b"end", qos=0)
    received = {m.topic: m.qos for m in sub.expect(2)}  # a QoS 2 message may come second
    assert received == {"home/kitchen/temp": 2, "home/barrier": 0}


def test_publisher_receives_its_own_message(broker: BrokerThread) -> None:
    client = PahoClient(broker.port, "loop")
    client.subscribe("echo", 1)
    client.publish("echo", b"me", qos=1)
    assert client.expect()[0].payload == b"me"
