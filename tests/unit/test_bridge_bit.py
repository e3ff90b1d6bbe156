"""The bridge bit of CONNECT (Mosquitto's try_private): loops between brokers are prevented."""

import pytest

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.connection import Connection
from mqttish.core.hooks import INTERNAL_LISTENER
from mqttish.protocol.codec import PacketDecoder, encode
from mqttish.protocol.packets import MQTT_3_1_1, MQTT_5, ConnAck, Connect, Publish
from mqttish.protocol.properties import Properties
from tests.unit.peer import Peer


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_bridge_bit_round_trips(version: int) -> None:
    data = encode(Connect("bridge-1", version, bridge=True), version)
    assert data[8] == 0x80 | version  # the protocol level byte, as Mosquitto's bridges send it
    decoder = PacketDecoder()
    decoder.feed(data)
    packet = decoder.next()
    assert isinstance(packet, Connect)
    assert packet.bridge and packet.protocol_level == version


def test_mosquitto_bridge_connect_is_accepted() -> None:
    """The bytes a Mosquitto 2.0 bridge sends (protocol level 0x84) get CONNACK 0."""
    peer = Peer(Broker(Config()))
    peer.connection.receive_data(b"\x10\x10\x00\x04MQTT\x84\x02\x00\x3c\x00\x04br-1", 0)
    assert peer.receive() == [ConnAck(False, 0)]


def test_a_bridge_gets_neither_its_own_messages_nor_cleared_retain_flags() -> None:
    broker = Broker(Config())
    bridge = Peer(broker)
    bridge.connect("bridge", bridge=True)
    bridge.subscribe("a/#", 1)
    other = Peer(broker)
    other.connect("other")
    other.subscribe("a/#", 1)
    answer = bridge.send(Publish("a/1", b"from the bridge", 1, True, packet_id=1))
    assert not any(isinstance(p, Publish) for p in answer)  # no echo: the other broker has it
    [copy] = other.publishes()
    assert copy.payload == b"from the bridge" and not copy.retain  # a plain client: cleared
    other.send(Publish("a/2", b"live", 0, True))
    [forwarded] = bridge.publishes()
    assert forwarded.retain  # the retained state travels to the other broker


def test_an_ordinary_client_still_gets_its_own_messages() -> None:
    broker = Broker(Config())
    client = Peer(broker)
    client.connect("client")
    client.subscribe("a/#")
    answer = client.send(Publish("a/1", b"x"))
    assert [p.payload for p in answer if isinstance(p, Publish)] == [b"x"]


def test_a_bridge_session_is_not_cut_short_by_persistent_client_expiration() -> None:
    """The bridge's own session here holds what it must still forward while the remote
    broker is away; other sessions expire as configured."""
    broker = Broker(Config(persistent_client_expiration=10))
    bridge = Peer(broker, MQTT_5)
    bridge.connection = Connection(broker, "bridge:cloud", 0, listener=INTERNAL_LISTENER)
    device = Peer(broker, MQTT_5)
    for peer, client_id in ((bridge, "local.bridge"), (device, "device")):
        peer.connect(client_id, clean_start=False,
                     properties=Properties(session_expiry_interval=0xFFFFFFFF))
        peer.drop(now=1)
    broker.housekeeping(now=100)
    assert "local.bridge" in broker.sessions
    assert "device" not in broker.sessions
