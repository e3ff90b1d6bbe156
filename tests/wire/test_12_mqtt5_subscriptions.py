"""MQTT 5.0 subscription options and identifiers, SUBACK and UNSUBACK reason codes."""

import paho.mqtt.client as mqtt

from mqttish.protocol.packets import MQTT_5, Disconnect, Subscribe, SubscriptionRequest
from mqttish.protocol.reason_codes import ReasonCode
from tests.conftest import BrokerThread
from tests.wire.mqtt5 import props, v5
from tests.wire.raw_client import RawClient


def test_no_local(broker: BrokerThread) -> None:
    chat = v5(broker.port, "chat")
    chat.subscribe("room/#", 1, noLocal=True)
    chat.subscribe("room/echo", 1)  # overlapping, without No Local
    other = v5(broker.port, "other")
    chat.publish("room/lobby", b"own message", qos=1)
    chat.publish("room/echo", b"echoed", qos=1)
    other.publish("room/lobby", b"from other", qos=1)
    assert [m.payload for m in chat.expect(2)] == [b"echoed", b"from other"]


def test_no_local_on_shared_subscription_is_a_protocol_error(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("nl")
    raw.send(Subscribe(1, (SubscriptionRequest("$share/g/t", 1, no_local=True),)))
    assert raw.receive() == Disconnect(ReasonCode.PROTOCOL_ERROR)


def test_retain_as_published(broker: BrokerThread) -> None:
    keep = v5(broker.port, "keep")
    keep.subscribe("rap", 1, retainAsPublished=True)
    plain = v5(broker.port, "plain")
    plain.subscribe("rap", 1)
    v5(broker.port, "pub").publish("rap", b"r", qos=1, retain=True)
    assert keep.expect()[0].retain is True
    assert plain.expect()[0].retain is False


def test_retain_handling(broker: BrokerThread) -> None:
    v5(broker.port, "pub").publish("rh", b"stored", qos=1, retain=True)
    client = v5(broker.port, "rh")
    client.subscribe("rh", 1, retainHandling=mqtt.SubscribeOptions.RETAIN_DO_NOT_SEND)
    client.subscribe("rh/+", 1, retainHandling=mqtt.SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    client.subscribe("rh/#", 1, retainHandling=mqtt.SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    [first] = client.expect()  # "rh/#" matches "rh"; "rh" itself asked for nothing
    assert (first.payload, first.retain) == (b"stored", True)
    client.subscribe("rh/#", 1, retainHandling=mqtt.SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    client.subscribe("rh", 1, retainHandling=mqtt.SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    [second] = client.expect()  # only the last one: the repeated "rh/#" sent nothing
    assert second.payload == b"stored"
    assert client.subacks.empty()


def test_subscription_identifiers(broker: BrokerThread) -> None:
    client = v5(broker.port, "ids")
    client.subscribe("home/#", 1, properties=props("SUBSCRIBE", SubscriptionIdentifier=7))
    client.subscribe("home/+/temp", 1, properties=props("SUBSCRIBE", SubscriptionIdentifier=42))
    client.subscribe("home/kitchen/door", 1)
    pub = v5(broker.port, "pub")
    pub.publish("home/kitchen/temp", b"21", qos=1)
    pub.publish("home/kitchen/door", b"open", qos=1)
    temp, door = client.expect(2)
    assert sorted(temp.properties.SubscriptionIdentifier) == [7, 42]
    assert door.properties.SubscriptionIdentifier == [7]


def test_suback_and_unsuback_reason_codes(broker: BrokerThread) -> None:
    client = v5(broker.port, "codes")
    assert [c.value for c in client.subscribe("t", 2)] == [2]
    assert [c.value for c in client.unsubscribe("t")] == [0]
    assert [c.value for c in client.unsubscribe("never")] == [ReasonCode.NO_SUBSCRIPTION_EXISTED]
