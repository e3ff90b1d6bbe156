"""Bugs the fuzzer found outside issue #10, replayed through the core as it found them."""

from __future__ import annotations

from mqttish.config import Config
from mqttish.protocol.codec import PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Publish,
    Subscribe,
    SubscriptionRequest,
)
from tests.fuzz.adapter import CoreClient, new_broker


def _fed(data: bytes, version: int) -> PacketDecoder:
    """The packets a client makes of the broker's bytes (iterating raises if malformed)."""
    decoder = PacketDecoder(version)
    decoder.feed(data)
    return decoder


def test_shared_message_handed_on_at_qos_0_carries_no_dup() -> None:
    """A member with a persistent session leaves with a QoS 1 shared message unacknowledged;
    the member that gets it next subscribed at QoS 0, so it arrives at QoS 0, and DUP
    must be 0 [MQTT-3.3.1-2]."""
    broker = new_broker(Config(listeners=()))
    leaving = CoreClient(broker, 0.0)
    leaving.exchange(
        encode(Connect("leaving", MQTT_3_1_1, clean_start=False))
        + encode(Subscribe(1, (SubscriptionRequest("$share/g/#", 1),)))
        + encode(Publish("t", b"x", 1, packet_id=2)), 0.0)
    leaving.lose(1.0)
    joining = CoreClient(broker, 1.0)
    output = joining.exchange(
        encode(Connect("joining", MQTT_5), MQTT_5)
        + encode(Subscribe(1, (SubscriptionRequest("$share/g/#", 0),)), MQTT_5), 1.0)
    publishes = [p for p in _fed(output, MQTT_5) if isinstance(p, Publish)]
    assert [(p.topic, p.qos, p.dup) for p in publishes] == [("t", 0, False)]
