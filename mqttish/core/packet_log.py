"""Every packet in and out, logged the way `mosquitto -v` does (`log_packets`, `-v`).

Theory of operation: logging packets must cost nothing when it is off, and
the hot path is per packet. So it is not a check in `Connection` at all: the
transports make their connections with `connection_type(settings)`, asked once
per connection, which is `Connection` itself unless packets are logged. Then
it is `LoggedConnection`, which decodes a copy of the bytes going each way with
decoders of its own and logs one line per packet, before the packets are
handled (input) or after they are encoded (output). Client-supplied text
(client ids, topics, filters) goes through `clip`.

    Received PUBLISH from 'sensor-1' (d0, q1, r0, m3, 'sensors/1/t', ... (4 bytes))
    Sending PUBACK to 'sensor-1' (m3, rc0)
"""

from __future__ import annotations

import logging
from typing import Any

from mqttish.core.connection import Connection
from mqttish.core.settings import BrokerSettings
from mqttish.errors import MQTTError
from mqttish.log_text import clip
from mqttish.protocol.codec import PacketDecoder
from mqttish.protocol.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

log = logging.getLogger("mqttish.packets")

FILTERS_SHOWN = 8  # of a SUBSCRIBE or UNSUBSCRIBE; the rest are counted


def connection_type(settings: BrokerSettings) -> type[Connection]:
    """The class of the connections a transport makes: asked once per connection."""
    return LoggedConnection if settings.log_packets else Connection


class LoggedConnection(Connection):
    """A `Connection` that logs the packets it receives and sends."""

    __slots__ = ("_incoming", "_named", "_outgoing")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._incoming: PacketDecoder | None = PacketDecoder()
        self._outgoing = PacketDecoder()
        self._named = ""  # the client id of the CONNECT logged (read before it is handled)

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        if data and self._incoming is not None:
            self._log(self._incoming, data, "Received")
        super().receive_data(data, now)

    def data_to_send(self, now: float) -> bytes:
        data = super().data_to_send(now)
        if data and self._incoming is not None:
            self._outgoing.version = self._incoming.version
            self._log(self._outgoing, data, "Sending")
        return data

    def _log(self, decoder: PacketDecoder, data: bytes | bytearray, verb: str) -> None:
        decoder.feed(data)
        try:
            for packet in decoder:
                log.debug("%s %s", verb, describe(packet, self._who(packet, verb)))
        except MQTTError:  # the connection itself says what is wrong with the input
            self._incoming = None  # and there is nothing more to log that makes sense

    def _who(self, packet: Packet, verb: str) -> str:
        direction = "from" if verb == "Received" else "to"
        if isinstance(packet, Connect):
            self._named = packet.client_id
            return f"from {self.peer} as {clip(packet.client_id)}"
        if self.client is not None:
            return f"{direction} {clip(self.client.client_id)}"
        return f"{direction} {clip(self._named) if self._named else self.peer}"


def describe(packet: Packet, who: str) -> str:
    """One packet as `mosquitto -v` shows it: `PUBLISH from 'c' (d0, q1, ...)`."""
    kind = type(packet).__name__.upper()
    details = _details(packet)
    return f"{kind} {who} ({details})" if details else f"{kind} {who}"


def _details(packet: Packet) -> str:
    match packet:
        case Publish():
            mid = packet.packet_id or 0
            return (f"d{packet.dup:d}, q{packet.qos}, r{packet.retain:d}, m{mid}, "
                    f"{clip(packet.topic)}, ... ({len(packet.payload)} bytes)")
        case PubAck() | PubRec() | PubRel() | PubComp():
            return f"m{packet.packet_id}, rc{packet.reason_code}"
        case Connect():
            user = f", u{clip(packet.username)}" if packet.username is not None else ""
            bridge = ", bridge" if packet.bridge else ""
            return (f"p{packet.protocol_level}, c{packet.clean_start:d}, "
                    f"k{packet.keepalive}{user}{bridge}")
        case ConnAck():
            return f"{packet.session_present:d}, {packet.reason_code}"
        case Subscribe():
            return _filters(packet.packet_id, [
                f"{clip(request.topic_filter)} QoS {request.qos}"
                for request in packet.subscriptions])
        case Unsubscribe():
            return _filters(packet.packet_id, [clip(f) for f in packet.topic_filters])
        case SubAck() | UnsubAck():
            codes = ", ".join(str(code) for code in packet.reason_codes[:FILTERS_SHOWN])
            more = len(packet.reason_codes) - FILTERS_SHOWN
            return f"m{packet.packet_id}, [{codes}{f', ... {more} more' if more > 0 else ''}]"
        case Disconnect() | Auth():
            return f"rc{packet.reason_code}"
    return ""


def _filters(packet_id: int, shown: list[str]) -> str:
    more = len(shown) - FILTERS_SHOWN
    listed = ", ".join(shown[:FILTERS_SHOWN])
    return f"m{packet_id}, {listed}{f', ... {more} more' if more > 0 else ''}"
