"""MQTT 5.0 messages: expiry, will delay, topic aliases both ways, flow control,
request/response properties, payload format, and crossing protocol versions."""

from mqttish.protocol.packets import (
    MQTT_5,
    Disconnect,
    PubAck,
    Publish,
    Subscribe,
    SubscriptionRequest,
)
from mqttish.protocol.properties import Properties
from mqttish.protocol.reason_codes import ReasonCode
from tests.conftest import BrokerThread
from tests.wire.mqtt5 import props, v5
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


def raw_subscriber(port: int, client_id: str, topic_filter: str, qos: int = 1,
                   **connect: object) -> RawClient:
    raw = RawClient(port, MQTT_5)
    raw.connect(client_id, **connect)
    raw.send(Subscribe(1, (SubscriptionRequest(topic_filter, qos),)))
    raw.receive()  # SUBACK
    return raw


def test_user_properties_and_request_response_forwarded(broker: BrokerThread) -> None:
    responder = v5(broker.port, "responder")
    responder.subscribe("requests/#", 1)
    requester = v5(broker.port, "requester")
    requester.publish("requests/time", b"{}", qos=1, properties=props(
        "PUBLISH", ResponseTopic="replies/requester", CorrelationData=b"\x01\x02",
        ContentType="application/json", PayloadFormatIndicator=1,
        UserProperty=[("trace", "abc"), ("trace", "def")]))
    [request] = responder.expect()
    p = request.properties
    assert (p.ResponseTopic, p.CorrelationData, p.ContentType, p.PayloadFormatIndicator) == (
        "replies/requester", b"\x01\x02", "application/json", 1)
    assert p.UserProperty == [("trace", "abc"), ("trace", "def")]


def test_puback_says_no_matching_subscribers(broker: BrokerThread) -> None:
    client = v5(broker.port, "lonely")
    reason = client.publish("nobody/listens", b"x", qos=1)
    assert reason is not None and reason.value == ReasonCode.NO_MATCHING_SUBSCRIBERS


def test_invalid_utf8_with_payload_format_indicator_refused(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("pfi")
    raw.send(Publish("t", b"\xff\xfe", 1, packet_id=1,
                     properties=Properties(payload_format_indicator=1)))
    assert raw.receive() == PubAck(1, ReasonCode.PAYLOAD_FORMAT_INVALID)


def test_expired_messages_are_not_delivered(broker: BrokerThread) -> None:
    sub = v5(broker.port, "late", clean_start=False,
             properties=props("CONNECT", SessionExpiryInterval=3600))
    sub.subscribe("expiring/#", 1)
    sub.disconnect()
    broker.disconnects.wait("late")
    pub = v5(broker.port, "pub")
    pub.publish("expiring/short", b"stale", qos=1,
                properties=props("PUBLISH", MessageExpiryInterval=10))
    pub.publish("expiring/long", b"fresh", qos=1,
                properties=props("PUBLISH", MessageExpiryInterval=100))
    pub.publish("expiring/retained", b"old", qos=1, retain=True,
                properties=props("PUBLISH", MessageExpiryInterval=10))
    broker.advance(30)
    back = v5(broker.port, "late", clean_start=False)
    [message] = back.expect()
    assert message.payload == b"fresh"
    assert 60 <= message.properties.MessageExpiryInterval <= 70  # the time left is forwarded
    watcher = v5(broker.port, "watcher")
    watcher.subscribe("expiring/#", 1)
    pub.publish("expiring/barrier", b"end", qos=1)
    assert watcher.expect()[0].payload == b"end"  # the expired retained message was not sent


def test_will_delay_and_cancellation(broker: BrokerThread) -> None:
    watch = v5(broker.port, "watch", keepalive=0)  # the broker's clock will jump ahead
    watch.subscribe("wills/#", 1)
    will_props = props("WILLMESSAGE", WillDelayInterval=30, ContentType="text/plain",
                       UserProperty=[("site", "kitchen")])
    connect = props("CONNECT", SessionExpiryInterval=3600)

    def device() -> PahoClient:
        client = v5(broker.port, "device", clean_start=False, connect=False,
                    properties=connect)
        client.client.will_set("wills/device", b"offline", 1, False, will_props)
        client.connect(properties=connect, clean_start=False)
        return client

    device().kill()
    broker.disconnects.wait("device")
    broker.advance(10)
    device().disconnect()  # back within the delay: the will is cancelled
    broker.disconnects.wait("device", 2)
    broker.advance(60)
    device().kill()
    broker.disconnects.wait("device", 3)
    broker.advance(31)
    [will] = watch.expect()
    assert will.payload == b"offline"
    assert will.properties.ContentType == "text/plain"
    assert will.properties.UserProperty == [("site", "kitchen")]


def test_client_topic_alias(broker: BrokerThread) -> None:
    sub = v5(broker.port, "sub")
    sub.subscribe("alias/#", 1)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("aliaser")
    raw.send(Publish("alias/long/topic/name", b"1", 1, packet_id=1,
                     properties=Properties(topic_alias=3)))
    raw.send(Publish("", b"2", 1, packet_id=2, properties=Properties(topic_alias=3)))
    assert [raw.receive(), raw.receive()] == [PubAck(1), PubAck(2)]
    assert [(m.topic, m.payload) for m in sub.expect(2)] == [
        ("alias/long/topic/name", b"1"), ("alias/long/topic/name", b"2")]


def test_topic_alias_above_maximum_disconnects(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(topic_alias_maximum=2)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("greedy")
    raw.send(Publish("t", b"x", properties=Properties(topic_alias=3)))
    assert raw.receive() == Disconnect(ReasonCode.TOPIC_ALIAS_INVALID)


def test_unknown_topic_alias_is_a_protocol_error(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("forgetful")
    raw.send(Publish("", b"x", properties=Properties(topic_alias=1)))
    assert raw.receive() == Disconnect(ReasonCode.PROTOCOL_ERROR)


def test_server_uses_topic_aliases_when_allowed(broker: BrokerThread) -> None:
    raw = raw_subscriber(broker.port, "small", "a/#", 0,
                         properties=Properties(topic_alias_maximum=1))
    pub = v5(broker.port, "pub")
    for topic in ["a/first", "a/first", "a/second"]:
        pub.publish(topic, b"x", qos=1)
    first, again, other = raw.receive(), raw.receive(), raw.receive()
    assert isinstance(first, Publish) and isinstance(again, Publish)
    assert (first.topic, first.properties.topic_alias) == ("a/first", 1)
    assert (again.topic, again.properties.topic_alias) == ("", 1)
    assert isinstance(other, Publish)
    assert (other.topic, other.properties.topic_alias) == ("a/second", None)  # aliases full


def test_receive_maximum_limits_unacknowledged_messages(broker: BrokerThread) -> None:
    raw = raw_subscriber(broker.port, "slow", "work", 1,
                         properties=Properties(receive_maximum=2))
    pub = v5(broker.port, "pub")
    for i in range(5):
        pub.publish("work", str(i).encode(), qos=1)
    first, second = raw.receive(), raw.receive()
    assert isinstance(first, Publish) and isinstance(second, Publish)
    pub.publish("work", b"probe", qos=1)  # acknowledged by the broker, held back from us
    raw.send(PubAck(first.packet_id))  # type: ignore[arg-type]
    third = raw.receive()
    assert isinstance(third, Publish) and third.payload == b"2"
    assert broker.call(lambda: len(broker.broker.sessions["slow"].outgoing.flights)) == 2


def test_broker_receive_maximum_enforced_for_qos2(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_inflight_messages=2)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("flood")
    for packet_id in (1, 2, 3):
        raw.send(Publish("t", b"x", 2, packet_id=packet_id))
    assert raw.receive() is not None and raw.receive() is not None  # two PUBRECs
    assert raw.receive() == Disconnect(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)


def test_message_too_large_for_subscriber_is_dropped_for_it(broker: BrokerThread) -> None:
    raw = raw_subscriber(broker.port, "tiny", "sized/#", 0,
                         properties=Properties(maximum_packet_size=100))
    pub = v5(broker.port, "pub")
    pub.publish("sized/big", b"x" * 200, qos=1)
    pub.publish("sized/small", b"ok", qos=1)
    message = raw.receive()
    assert isinstance(message, Publish) and message.payload == b"ok"
    assert broker.call(lambda: broker.broker.metrics.publish_dropped) == 1


def test_messages_cross_protocol_versions(broker: BrokerThread) -> None:
    old = PahoClient(broker.port, "old")
    old.subscribe("mixed/#", 1)
    new = v5(broker.port, "new")
    new.subscribe("mixed/#", 1)
    new.publish("mixed/from5", b"five", qos=1, properties=props(
        "PUBLISH", UserProperty=[("k", "v")], ContentType="text/plain"))
    old.publish("mixed/from3", b"three", qos=1)
    assert [(m.topic, m.payload) for m in old.expect(2)] == [
        ("mixed/from5", b"five"), ("mixed/from3", b"three")]
    five, three = new.expect(2)
    assert five.properties.UserProperty == [("k", "v")]
    assert not hasattr(three.properties, "UserProperty")
