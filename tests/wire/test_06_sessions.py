"""Persistent sessions: subscriptions survive, QoS 1/2 queued offline, resent with DUP."""

from mqttish.persistence.memory import MemoryStore
from mqttish.protocol.packets import Publish, Subscribe, SubscriptionRequest
from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


def test_offline_messages_queued_for_persistent_session(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "durable", clean_session=False)
    sub.subscribe("jobs/#", 2)
    sub.disconnect()
    broker.disconnects.wait("durable")
    pub = PahoClient(broker.port, "pub")
    pub.publish("jobs/1", b"q1", qos=1)
    pub.publish("jobs/2", b"q2", qos=2)
    pub.publish("jobs/3", b"dropped qos0", qos=0)
    pub.publish("jobs/4", b"barrier", qos=1)  # acknowledged: jobs/3 was handled before it
    back = PahoClient(broker.port, "durable", clean_session=False)
    assert back.connect_flags["session_present"]
    # paho hands a QoS 2 message over only after PUBREL, so compare without order.
    assert sorted(m.payload for m in back.expect(3)) == [b"barrier", b"q1", b"q2"]
    pub.publish("jobs/5", b"live", qos=0)
    assert back.expect()[0].payload == b"live"  # the QoS 0 offline message was not queued


def test_qos0_queued_when_configured(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(queue_qos0_messages=True)
    sub = PahoClient(broker.port, "durable", clean_session=False)
    sub.subscribe("t", 0)
    sub.disconnect()
    broker.disconnects.wait("durable")
    PahoClient(broker.port, "pub").publish("t", b"kept")
    back = PahoClient(broker.port, "durable", clean_session=False)
    assert back.expect()[0].payload == b"kept"


def test_offline_queue_is_bounded(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_queued_messages=5)
    sub = PahoClient(broker.port, "durable", clean_session=False)
    sub.subscribe("t", 1)
    sub.disconnect()
    broker.disconnects.wait("durable")
    pub = PahoClient(broker.port, "pub")
    for i in range(20):
        pub.publish("t", str(i).encode(), qos=1)
    back = PahoClient(broker.port, "durable", clean_session=False)
    pub.publish("t", b"live", qos=1)
    assert [m.payload for m in back.expect(6)] == [b"0", b"1", b"2", b"3", b"4", b"live"]
    assert broker.call(lambda: broker.broker.metrics.publish_dropped) == 15


def test_unacknowledged_messages_resent_with_dup(broker: BrokerThread) -> None:
    sub = RawClient(broker.port)
    sub.connect("forgetful", clean_start=False)
    sub.send(Subscribe(1, (SubscriptionRequest("work", 1),)))
    sub.receive()
    PahoClient(broker.port, "pub").publish("work", b"unacked", qos=1)
    first = sub.receive()
    assert isinstance(first, Publish) and not first.dup
    sub.close()  # without PUBACK
    again = RawClient(broker.port)
    assert again.connect("forgetful", clean_start=False).session_present
    resent = again.receive()
    assert isinstance(resent, Publish)
    assert (resent.payload, resent.dup, resent.packet_id) == (b"unacked", True, first.packet_id)


def test_clean_session_discards_everything(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "c", clean_session=False)
    sub.subscribe("t", 1)
    sub.disconnect()
    broker.disconnects.wait("c")
    PahoClient(broker.port, "pub").publish("t", b"old", qos=1)
    clean = PahoClient(broker.port, "c", clean_session=True)
    assert not clean.connect_flags["session_present"]
    clean.subscribe("barrier", 0)
    PahoClient(broker.port, "pub2").publish("barrier", b"end")
    assert [m.payload for m in clean.expect(1)] == [b"end"]


def test_sessions_and_retained_survive_a_restart(start_broker) -> None:  # type: ignore[no-untyped-def]
    store = MemoryStore()
    first = start_broker(store=store)
    sub = PahoClient(first.port, "durable", clean_session=False)
    sub.subscribe("t", 1)
    sub.disconnect()
    first.disconnects.wait("durable")
    pub = PahoClient(first.port, "pub")
    pub.publish("t", b"queued", qos=1)
    pub.publish("r", b"retained", qos=1, retain=True)
    pub.disconnect()
    first.stop()
    second = start_broker(store=store)
    back = PahoClient(second.port, "durable", clean_session=False)
    assert back.connect_flags["session_present"]
    assert back.expect()[0].payload == b"queued"
    back.subscribe("r", 1)
    assert back.expect()[0].payload == b"retained"
