"""The client side of MQTT without I/O: bytes in, events out, a session that outlives connections.

Theory of operation: `ClientProtocol` is the client's half of what the broker
keeps in `core.session` and `core.connection`. For every network connection
the I/O layer calls `start()` (which queues CONNECT), feeds received bytes to
`receive_data()`, takes events from `next_event()` and sends whatever
`data_to_send()` returns; `connection_lost()` ends the connection.

Requests (`publish`, `subscribe`, `unsubscribe`) return the packet identifier
whose `Completed` event will end them; the protocol answers PUBREC and PUBREL
itself.

Incoming QoS 1/2 messages are the client's flow control. Each is reported as
`MessageReceived` with an `Incoming` record, and acknowledged (PUBACK, or
PUBREC for QoS 2) only when the I/O layer calls `acknowledge()` because the
application is done with it. Until then the server counts it against its
window (our Receive Maximum), so the number of messages we hold is bounded
without ever having to stop reading. Acknowledgements go out in the order the
messages came [MQTT-4.6.0-2, 4.6.0-3]: one the application gives early waits
for the earlier ones. A record outlives its connection: when a resumed session
re-sends the message (DUP), the application is not given it a second time,
and its acknowledgement goes out on the new connection.

What must survive a reconnect lives here: QoS 1/2 publishes in flight,
requests not yet acknowledged, the subscriptions to restore when the server
has no session, incoming messages not yet acknowledged, and the ids of QoS 2
messages received but not yet released.
When a CONNACK accepts a new connection they are sent again (PUBLISH with DUP,
PUBREL, SUBSCRIBE), so callers waiting for an acknowledgement keep waiting.

States: DISCONNECTED -> AWAITING_CONNACK -> CONNECTED -> DISCONNECTED -> ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from mqttish.client.errors import ConnectError
from mqttish.errors import LocalProtocolError, RemoteProtocolError, protocol_error
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.flow import AliasesIn, FlightState, IncomingQos2, Outgoing
from mqttish.protocol.packets import (
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from mqttish.protocol.reason_codes import ReasonCode
from mqttish.protocol.topics import parse_shared, validate_subscription_filter, validate_topic_name
from mqttish.protocol.wire import MAX_VARINT

log = logging.getLogger("mqttish.client")

_PINGREQ = encode(PingReq())


@dataclass(frozen=True, slots=True)
class Message:
    """An application message the server delivered to us.

    `dup` is the PUBLISH's DUP flag: the server has sent this message before,
    to us on an earlier connection or to another member of a shared
    subscription, so it may have been processed already.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES
    dup: bool = False
    # Set by the client on the copy a manual-ack consumer takes: what `ack()` does.
    _ack: Callable[[], None] | None = field(default=None, kw_only=True, compare=False,
                                            repr=False)

    @property
    def text(self) -> str:
        """The payload as UTF-8 text, for the common case of textual payloads."""
        return self.payload.decode()

    def ack(self) -> None:
        """Done with a message from a `manual_ack` subscription: let the server forget it.

        Until then the server keeps it in flight to us, and sends it again if
        the connection is lost. Calling it again, or on any other message, does
        nothing: those were acknowledged when the consumer took them.
        """
        if self._ack is not None:
            self._ack()


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class Connected:
    """The server accepted the connection."""

    connack: ConnAck


class Incoming:
    """An incoming QoS 1/2 message, from its PUBLISH until our PUBACK (or PUBREC) is sent."""

    __slots__ = ("acked", "live", "message", "packet_id")

    def __init__(self, packet_id: int, message: Message) -> None:
        self.packet_id = packet_id
        self.message = message
        self.acked = False  # the application is done with it
        self.live = True  # the server awaits our acknowledgement on this connection


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message to hand to the application; `incoming` (QoS 1/2) goes to `acknowledge()`."""

    message: Message
    incoming: Incoming | None


@dataclass(frozen=True, slots=True)
class Completed:
    """A request ended; `ack` is its PUBACK, PUBREC (a refusal), PUBCOMP, SUBACK or UNSUBACK."""

    packet_id: int
    ack: PubAck | PubRec | PubComp | SubAck | UnsubAck


@dataclass(frozen=True, slots=True)
class PingResponse:
    pass


@dataclass(frozen=True, slots=True)
class ServerDisconnected:
    """An MQTT 5 server said why it is closing the connection."""

    disconnect: Disconnect


Event = Connected | MessageReceived | Completed | PingResponse | ServerDisconnected


# ------------------------------------------------------------------ state


class ProtocolState(Enum):
    DISCONNECTED = 0
    AWAITING_CONNACK = 1
    CONNECTED = 2


class _Flight:
    """One of our QoS 1/2 publishes that the server has not finished acknowledging."""

    __slots__ = ("publish", "state")

    def __init__(self, publish: Publish, state: FlightState) -> None:
        self.publish = publish
        self.state = state


def local_error(exc: RemoteProtocolError) -> LocalProtocolError:
    """The topic validators blame the peer; when we are the sender, the fault is ours."""
    return LocalProtocolError(str(exc), exc.reason_code)


def _validate_filters(topic_filters: Iterable[str]) -> None:
    for topic_filter in topic_filters:
        try:
            validate_subscription_filter(topic_filter)
        except RemoteProtocolError as exc:
            raise local_error(exc) from None


def matching_filter(topic_filter: str) -> str:
    """The filter that selects a subscription's messages locally: `$share/g/a/#` -> `a/#`."""
    try:
        shared = parse_shared(topic_filter)
    except RemoteProtocolError as exc:
        raise local_error(exc) from None
    return shared.topic_filter if shared is not None else topic_filter


class ClientProtocol:
    """The client's protocol state, from one CONNECT to the end of the session."""

    __slots__ = (
        "_aliases", "_decoder", "_out", "connect", "incoming_qos2", "max_inflight", "outgoing",
        "requests", "send_window", "server", "session_present", "state", "subscriptions",
        "unacknowledged", "version",
    )

    def __init__(self, connect: Connect, max_inflight: int = 20) -> None:
        self.connect = connect  # what the next start() sends; updated as the session settles
        self.version = connect.protocol_level
        self.max_inflight = max_inflight
        self.state = ProtocolState.DISCONNECTED
        self.server = NO_PROPERTIES  # the last CONNACK's properties: the server's limits
        self.session_present = False
        self.send_window = max_inflight
        self.outgoing: Outgoing[_Flight] = Outgoing()  # our QoS 1/2 publishes in flight
        self.requests: dict[int, Subscribe | Unsubscribe] = {}
        # Granted subscriptions, to restore on a server that lost our session.
        self.subscriptions: dict[str, tuple[SubscriptionRequest, int | None]] = {}
        # Incoming QoS 1/2 messages not acknowledged yet, in the order they came.
        self.unacknowledged: dict[int, Incoming] = {}
        self.incoming_qos2 = IncomingQos2()  # PUBREC sent, PUBREL not received yet
        self._aliases = self._new_aliases()
        self._decoder = PacketDecoder(self.version)
        self._out: list[bytes] = []

    # ------------------------------------------------------------------ I/O side

    def start(self) -> None:
        """A new network connection: queue CONNECT; nothing of the old connection remains."""
        self.state = ProtocolState.AWAITING_CONNACK
        self._decoder = PacketDecoder(self.version)
        self._aliases = self._new_aliases()  # [MQTT-3.3.2-7] they do not outlive a connection
        self._out = [encode(self.connect, self.version)]

    def connection_lost(self) -> None:
        self.state = ProtocolState.DISCONNECTED
        self._out = []
        for incoming in self.unacknowledged.values():
            incoming.live = False  # acknowledged, if at all, once the server re-sends it

    def receive_data(self, data: bytes | bytearray) -> None:
        self._decoder.feed(data)

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed. Raises RemoteProtocolError."""
        decoder = self._decoder
        while True:
            packet = decoder.next()
            if packet is NEED_DATA:
                return None
            if self.state is ProtocolState.AWAITING_CONNACK and type(packet) is not ConnAck:
                raise protocol_error(
                    f"[MQTT-3.2.0-1] the server sent {type(packet).__name__} before CONNACK")
            event = self._handlers[type(packet)](self, packet)
            if event is not None:
                return event

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        return data

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    # ------------------------------------------------------------------ application side

    @property
    def can_publish(self) -> bool:
        """Whether one more QoS 1/2 publish fits in the server's receive window."""
        return len(self.outgoing.flights) < self.send_window

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Properties = NO_PROPERTIES) -> int | None:
        """Queue a PUBLISH; return its packet id (None for QoS 0, which is lost if offline)."""
        try:
            validate_topic_name(topic)
        except RemoteProtocolError as exc:
            raise local_error(exc) from None
        server = self.server
        if server.maximum_qos is not None and qos > server.maximum_qos:
            raise LocalProtocolError(
                f"[MQTT-3.2.2-11] QoS {qos} exceeds the server's maximum QoS {server.maximum_qos}",
                ReasonCode.QOS_NOT_SUPPORTED)
        if retain and server.retain_available == 0:
            raise LocalProtocolError("[MQTT-3.2.2-14] the server does not support retain",
                                     ReasonCode.RETAIN_NOT_SUPPORTED)
        packet_id = self.outgoing.allocate(self.requests) if qos else None
        packet = Publish(topic, payload, qos, retain, False, packet_id, properties)
        data = encode(packet, self.version)
        limit = server.maximum_packet_size
        if limit is not None and len(data) > limit:
            raise LocalProtocolError(
                f"[MQTT-3.1.2-24] a PUBLISH of {len(data)} bytes exceeds the server's maximum "
                f"packet size of {limit}", ReasonCode.PACKET_TOO_LARGE)
        if packet_id is not None:
            self.outgoing.put(packet_id, _Flight(packet, FlightState.AWAITING_PUBACK if qos == 1
                                                 else FlightState.AWAITING_PUBREC))
        if self.state is ProtocolState.CONNECTED:
            self._out.append(data)
        return packet_id

    def subscribe(self, requests: Iterable[SubscriptionRequest], identifier: int | None = None,
                  properties: Properties = NO_PROPERTIES) -> int:
        """Queue a SUBSCRIBE; return its packet id."""
        requests = tuple(requests)
        if not requests:
            raise LocalProtocolError("[MQTT-3.8.3-3] SUBSCRIBE needs at least one topic filter")
        _validate_filters(request.topic_filter for request in requests)
        if identifier is not None:
            if not 0 < identifier <= MAX_VARINT:
                raise LocalProtocolError(
                    f"[MQTT-3.8.2.1.2] subscription identifier {identifier} is out of range")
            properties = replace(properties, subscription_identifiers=(identifier,))
        return self._request(Subscribe(self._allocate_id(), requests, properties))

    def unsubscribe(self, topic_filters: Iterable[str],
                    properties: Properties = NO_PROPERTIES) -> int:
        """Queue an UNSUBSCRIBE; return its packet id. The filters are not restored any more."""
        topic_filters = tuple(topic_filters)
        if not topic_filters:
            raise LocalProtocolError("[MQTT-3.10.3-2] UNSUBSCRIBE needs at least one topic filter")
        _validate_filters(topic_filters)
        for topic_filter in topic_filters:
            self.subscriptions.pop(topic_filter, None)
        return self._request(Unsubscribe(self._allocate_id(), topic_filters, properties))

    def acknowledge(self, incoming: Incoming) -> None:
        """The application is done with a message: tell the server (PUBACK, or PUBREC for QoS 2).

        The acknowledgement may wait for those of earlier messages, or for the
        server to re-send a message of an earlier connection; one the server
        has forgotten (with its session) is never sent.
        """
        if incoming.acked:
            return
        incoming.acked = True
        if self.unacknowledged.get(incoming.packet_id) is incoming:
            self._send_acknowledgements()

    def ping(self) -> None:
        if self.state is ProtocolState.CONNECTED:
            self._out.append(_PINGREQ)

    def disconnect(self, reason_code: int = ReasonCode.NORMAL_DISCONNECTION,
                   properties: Properties = NO_PROPERTIES) -> None:
        """Queue DISCONNECT: the last packet of this connection."""
        if self.state is ProtocolState.CONNECTED:
            self._out.append(encode(Disconnect(reason_code, properties), self.version))
            self.state = ProtocolState.DISCONNECTED

    # ------------------------------------------------------------------ helpers

    def _send(self, packet: Packet) -> None:
        if self.state is ProtocolState.CONNECTED:
            self._out.append(encode(packet, self.version))

    def _request(self, packet: Subscribe | Unsubscribe) -> int:
        self.requests[packet.packet_id] = packet
        self._send(packet)
        return packet.packet_id

    def _send_acknowledgements(self) -> None:
        """[MQTT-4.6.0-2] [MQTT-4.6.0-3] PUBACK / PUBREC in the order the PUBLISH packets came.

        Messages of an earlier connection that the server has not re-sent are
        skipped: it may never re-send them (a shared subscription's broker
        gives them to another member), and they must not hold up the others.
        """
        if self.state is not ProtocolState.CONNECTED:
            return
        pending = self.unacknowledged
        ready = []
        for packet_id, incoming in pending.items():
            if not incoming.live:
                continue
            if not incoming.acked:
                break
            ready.append(packet_id)
        for packet_id in ready:
            incoming = pending.pop(packet_id)
            if incoming.message.qos == 1:
                self._send(PubAck(packet_id))
            else:
                self.incoming_qos2.hold(packet_id)
                self._send(PubRec(packet_id))

    def _allocate_id(self) -> int:
        """A packet id for a SUBSCRIBE or UNSUBSCRIBE (shared with our publishes')."""
        return self.outgoing.allocate(self.requests)

    def _new_aliases(self) -> AliasesIn:
        return AliasesIn(self.connect.properties.topic_alias_maximum or 0, "MQTT-3.3.2-11")

    def _resume(self) -> None:
        """After CONNACK: re-send what the last connection left unfinished, in order."""
        for packet_id, flight, as_publish in self.outgoing.resend():
            self._send(replace(flight.publish, dup=True) if as_publish else PubRel(packet_id))
        for request in self.requests.values():
            self._send(request)
        if self.session_present or not self.subscriptions:
            return
        by_identifier: dict[int | None, list[SubscriptionRequest]] = {}
        for subscription, identifier in self.subscriptions.values():
            by_identifier.setdefault(identifier, []).append(subscription)
        for identifier, requests in by_identifier.items():
            properties = NO_PROPERTIES
            if identifier is not None:
                properties = Properties(subscription_identifiers=(identifier,))
            self._request(Subscribe(self._allocate_id(), tuple(requests), properties))

    # ------------------------------------------------------------------ handlers

    def _handle_connack(self, packet: ConnAck) -> Event | None:
        if self.state is not ProtocolState.AWAITING_CONNACK:
            raise protocol_error("[MQTT-3.2.0-2] the server sent a second CONNACK")
        props = packet.properties
        if packet.reason_code >= 0x80:
            self.state = ProtocolState.DISCONNECTED
            raise ConnectError(packet.reason_code, props.reason_string)
        self.state = ProtocolState.CONNECTED
        self.server = props
        self.session_present = packet.session_present
        if not packet.session_present:
            # A new session: the server forgot the messages it sent us, and will reuse
            # their packet ids for new messages.
            self.incoming_qos2.clear()
            self.unacknowledged.clear()
        window = self.max_inflight
        if self.version == MQTT_5 and props.receive_maximum is not None:
            window = min(window, props.receive_maximum)
        self.send_window = window
        connect = self.connect
        if props.assigned_client_identifier is not None:
            connect = replace(connect, client_id=props.assigned_client_identifier)
        if self.version == MQTT_5:
            expiry = props.session_expiry_interval
            if expiry is None:
                expiry = connect.properties.session_expiry_interval or 0
            resumable = expiry > 0
        else:
            resumable = not connect.clean_start
        if resumable:
            # The session outlives this connection: a reconnect must resume it, not wipe it.
            connect = replace(connect, clean_start=False)
        self.connect = connect
        self._resume()
        return Connected(packet)

    def _handle_publish(self, packet: Publish) -> Event | None:
        topic = packet.topic
        props = packet.properties
        if props.topic_alias is not None:
            topic = self._aliases.resolve(packet.topic, props.topic_alias)
            props = replace(props, topic_alias=None)
        message = Message(topic, packet.payload, packet.qos, packet.retain, props, packet.dup)
        packet_id = packet.packet_id
        if packet_id is None:
            return MessageReceived(message, None)
        if packet.qos == 2 and packet_id in self.incoming_qos2:
            self._send(PubRec(packet_id))  # a re-send: the application already has it
            return None
        held = self.unacknowledged.get(packet_id)
        if held is not None:
            same = held.message.topic == topic and held.message.payload == packet.payload
            if packet.dup and same:
                # Re-sent on a new connection: the application has it already.
                held.live = True
                self._send_acknowledgements()
                return None
            # Another message under that id: the server gave up the old one, not us.
            del self.unacknowledged[packet_id]
        incoming = self.unacknowledged[packet_id] = Incoming(packet_id, message)
        return MessageReceived(message, incoming)

    def _handle_puback(self, packet: PubAck) -> Event | None:
        return self._completed(packet, self.outgoing.acknowledged(packet.packet_id))

    def _handle_pubrec(self, packet: PubRec) -> Event | None:
        refused, reply = self.outgoing.pubrec(packet.packet_id, packet.reason_code)
        if reply is not None:
            self._send(reply)
        return self._completed(packet, refused) if refused is not None else None

    def _handle_pubcomp(self, packet: PubComp) -> Event | None:
        # Any reason code completes: 0x92 after a reconnect means the server had already
        # released the message, whose PUBREC was a success.
        return self._completed(packet, self.outgoing.completed(packet.packet_id))

    def _completed(self, packet: PubAck | PubRec | PubComp, flight: _Flight | None
                   ) -> Event | None:
        if flight is None:
            log.debug("ignoring %s for packet id %d: not awaited", type(packet).__name__,
                      packet.packet_id)
            return None
        return Completed(packet.packet_id, packet)

    def _handle_pubrel(self, packet: PubRel) -> Event | None:
        self._send(self.incoming_qos2.release(packet.packet_id))
        return None

    def _handle_suback(self, packet: SubAck) -> Event | None:
        request = self.requests.get(packet.packet_id)
        if not isinstance(request, Subscribe):
            log.debug("ignoring SUBACK for packet id %d: not awaited", packet.packet_id)
            return None
        del self.requests[packet.packet_id]
        identifiers = request.properties.subscription_identifiers
        identifier = identifiers[0] if identifiers else None
        for subscription, code in zip(request.subscriptions, packet.reason_codes, strict=False):
            if code < 0x80:
                self.subscriptions[subscription.topic_filter] = (subscription, identifier)
        return Completed(packet.packet_id, packet)

    def _handle_unsuback(self, packet: UnsubAck) -> Event | None:
        request = self.requests.get(packet.packet_id)
        if not isinstance(request, Unsubscribe):
            log.debug("ignoring UNSUBACK for packet id %d: not awaited", packet.packet_id)
            return None
        del self.requests[packet.packet_id]
        return Completed(packet.packet_id, packet)

    def _handle_pingresp(self, packet: PingResp) -> Event | None:
        return PingResponse()

    def _handle_disconnect(self, packet: Disconnect) -> Event | None:
        self.state = ProtocolState.DISCONNECTED
        return ServerDisconnected(packet)

    def _handle_auth(self, packet: Auth) -> Event | None:
        raise protocol_error("[MQTT-4.12.0-1] AUTH without an authentication method at CONNECT")

    def _handle_unexpected(self, packet: Packet) -> Event | None:
        raise protocol_error(f"a server must not send {type(packet).__name__}")

    _handlers: dict[type, Callable[[ClientProtocol, Any], Event | None]] = {
        ConnAck: _handle_connack,
        Publish: _handle_publish,
        PubAck: _handle_puback,
        PubRec: _handle_pubrec,
        PubRel: _handle_pubrel,
        PubComp: _handle_pubcomp,
        SubAck: _handle_suback,
        UnsubAck: _handle_unsuback,
        PingResp: _handle_pingresp,
        Disconnect: _handle_disconnect,
        Auth: _handle_auth,
        Connect: _handle_unexpected,
        Subscribe: _handle_unexpected,
        Unsubscribe: _handle_unexpected,
        PingReq: _handle_unexpected,
    }
