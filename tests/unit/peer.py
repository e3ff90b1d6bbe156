"""A client talking to the sans-IO core directly: packets in, packets out, no sockets."""

from __future__ import annotations

from mqttish.core.broker import Broker
from mqttish.core.connection import Connection
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    ConnAck,
    Connect,
    Packet,
    Publish,
    Subscribe,
    SubscriptionRequest,
)


class Peer:
    def __init__(self, broker: Broker, version: int = MQTT_3_1_1, now: float = 0.0) -> None:
        self.broker = broker
        self.version = version
        self.connection = Connection(broker, "test-peer", now)
        self.decoder = PacketDecoder(version=version)
        self.pending: list[Packet] = []  # what arrived along with the CONNACK

    def send(self, *packets: Packet, now: float = 0.0) -> list[Packet]:
        """Send packets to the broker and return everything it answers."""
        self.connection.receive_data(b"".join(encode(p, self.version) for p in packets), now)
        return self.receive(now)

    def receive(self, now: float = 0.0) -> list[Packet]:
        self.decoder.feed(self.connection.data_to_send(now))
        out = []
        while (packet := self.decoder.next()) is not NEED_DATA:
            out.append(packet)
        return out

    def connect(self, client_id: str, now: float = 0.0, **fields: object) -> ConnAck:
        connect = Connect(client_id, self.version, **fields)  # type: ignore[arg-type]
        connack, *self.pending = self.send(connect, now=now)
        assert isinstance(connack, ConnAck)
        return connack

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1) -> list[Packet]:
        return self.send(Subscribe(packet_id, (SubscriptionRequest(topic_filter, qos),)))

    def publishes(self, now: float = 0.0) -> list[Publish]:
        packets, self.pending = [*self.pending, *self.receive(now)], []
        return [p for p in packets if isinstance(p, Publish)]

    def drop(self, now: float = 0.0) -> None:
        """The network connection ends without DISCONNECT."""
        self.connection.connection_lost(now)
