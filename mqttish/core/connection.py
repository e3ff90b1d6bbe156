"""One client connection as a sans-IO state machine: bytes in, bytes out.

Theory of operation: the transport feeds whatever it reads to
`receive_data(data, now)`. The decoder turns it into packets, and each packet
goes to its `_handle_<packet>` method, which asks the broker to act
(connect, publish, subscribe, ...). Nothing here awaits: a PUBLISH is routed
to every subscriber's session queue before `receive_data` returns.

Replies (CONNACK, PUBACK, ...) are encoded into an output list at once;
deliveries wait in the session's queue until the transport's writer calls
`data_to_send(now)`, which turns as many as the client's receive window allows
into PUBLISH bytes. `on_output` is called (once until the next drain) whenever
there is something new to send.

The state machine is AWAITING_CONNECT -> CONNECTED -> CLOSED, and all of its
transitions happen in this module. CLOSED is final: the transport sends what
is left in the output and closes the stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from mqttish.core.hooks import ClientInfo
from mqttish.core.message import Message
from mqttish.core.session import Delivery, DeliveryState, Session
from mqttish.errors import MQTTError, RemoteProtocolError, protocol_error
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
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
    UnsubAck,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from mqttish.protocol.reason_codes import ReasonCode

if TYPE_CHECKING:
    from mqttish.core.broker import Broker

log = logging.getLogger("mqttish.connection")

PINGRESP = b"\xd0\x00"
REPLY_BACKLOG = 1000  # replies (PUBACK, PINGRESP, ...) waiting to be sent, at most
PUBACK_HEAD = b"\x40\x02"  # a PUBACK is these two bytes and the packet id (3.1.1, or 5.0 success)


class ListenerCounters(Protocol):
    """Figures of the listener a connection came in on, which the connection keeps up."""

    clients: int  # MQTT clients connected now
    clients_total: int  # MQTT clients accepted (CONNACK 0) since start
    dropped: int  # deliveries dropped for its clients


class ConnectionState(Enum):
    AWAITING_CONNECT = 1
    CONNECTED = 2
    CLOSED = 3


def _no_output() -> None:
    pass


class Connection:
    """The protocol state of one network connection, from CONNECT to close."""

    def __init__(
        self,
        broker: Broker,
        peer: str,
        now: float,
        on_output: Callable[[], None] = _no_output,
        counters: ListenerCounters | None = None,
    ) -> None:
        self.broker = broker
        self.config = broker.config
        self.metrics = broker.metrics
        self.peer = peer
        self.opened_at = now
        self.on_output = on_output
        self.counters = counters
        self.state = ConnectionState.AWAITING_CONNECT
        self.decoder = PacketDecoder(max_packet_size=self.config.max_packet_size)
        self.version = MQTT_3_1_1
        self.session: Session | None = None
        self.client: ClientInfo | None = None
        self.will: Will | None = None
        self.keepalive = 0
        self.graceful = False  # the client said DISCONNECT: no will
        self.close_reason = ""
        self.wake_pending = False
        # What the client told us about itself (MQTT 5; 3.1.1 clients have no limits).
        self.send_quota = self.config.max_inflight_messages
        self.max_send_packet_size: int | None = None
        # Topic aliases (MQTT 5), made on first use: the client's for its PUBLISHes,
        # and ours for PUBLISHes to it.
        self.topic_aliases: dict[int, str] | None = None
        self.client_topic_alias_maximum = 0
        self.outgoing_aliases: dict[str, int] | None = None
        self._out: list[bytes] = []

    def __repr__(self) -> str:
        who = self.client.client_id if self.client else "?"
        return f"Connection({who!r} from {self.peer}, {self.state.name})"

    @property
    def name(self) -> str:
        """How log lines name this connection."""
        if self.client is None:
            return self.peer
        return f"{self.client.client_id!r} ({self.peer})"

    @property
    def backlogged(self) -> bool:
        """Too many replies wait for the client to read them: stop reading its requests.

        This bounds the memory a client that publishes but never reads can cost.
        """
        return len(self._out) >= REPLY_BACKLOG and self.state is not ConnectionState.CLOSED

    @property
    def closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    def read_deadline(self, now: float) -> float:
        """When the transport should give up waiting for the client's next bytes."""
        if self.state is ConnectionState.CLOSED:
            return math.inf  # the transport bounds the time a closing connection lingers
        if self.state is ConnectionState.AWAITING_CONNECT:
            return self.opened_at + self.config.connect_timeout
        if self.keepalive:
            return now + self.keepalive * 1.5  # [MQTT-3.1.2-24]
        return math.inf

    # ------------------------------------------------------------------ transport side

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Process bytes read from the network (none: go on with what is buffered).

        Stops early, keeping the rest buffered, while `backlogged`.
        """
        if self.state is ConnectionState.CLOSED:
            return
        self.metrics.bytes_received += len(data)
        decoder = self.decoder
        decoder.feed(data)
        handlers = self._handlers
        handle_publish = self._handle_publish
        next_packet = decoder.next
        closed = ConnectionState.CLOSED
        count = 0
        try:
            while (packet := next_packet()) is not NEED_DATA:
                count += 1
                if type(packet) is Publish:
                    handle_publish(packet, now)
                else:
                    handlers[type(packet)](self, packet, now)
                if self.state is closed or len(self._out) >= REPLY_BACKLOG:
                    break
        except MQTTError as exc:
            self._fail(exc, now)
        except Exception:
            self.internal_error(now)
        self.metrics.messages_received += count

    def data_to_send(self, now: float) -> bytes:
        """Everything ready to go to the client: replies, then queued deliveries."""
        self.wake_pending = False
        out = self._out
        session = self.session
        if session is not None and session.queue and self.state is ConnectionState.CONNECTED:
            self._encode_deliveries(session, out, now)
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        self.metrics.bytes_sent += len(data)
        return data

    def notify(self) -> None:
        """Something is ready to send: wake the transport's writer once."""
        if not self.wake_pending:
            self.wake_pending = True
            self.on_output()

    def read_deadline_expired(self, now: float) -> None:
        """The transport's `read_deadline` passed without the bytes it waited for."""
        if self.state is ConnectionState.AWAITING_CONNECT:
            self.close(now, "no CONNECT within the connect timeout")
        else:
            self.close(
                now,
                f"keepalive timeout ({self.keepalive} s x 1.5 of silence)",
                ReasonCode.KEEP_ALIVE_TIMEOUT,
            )

    def close(self, now: float, reason: str, code: ReasonCode | None = None) -> None:
        """End the connection: an MQTT 5 client is told why with a DISCONNECT (if `code`
        is given), the broker detaches the session and sends the will if the end was
        abnormal, and the transport is told to flush and close."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.state is ConnectionState.CONNECTED:
            if code is not None and self.version == MQTT_5:
                self._out.append(encode(Disconnect(code), MQTT_5))
            if self.counters is not None:
                self.counters.clients -= 1
        self.state = ConnectionState.CLOSED
        self.close_reason = reason
        self.broker.disconnected(self, now)
        self.wake_pending = True
        self.on_output()  # always: the transport must learn of the close

    def connection_lost(self, now: float, reason: str = "connection closed by peer") -> None:
        """The transport is done with this connection (a no-op if it was closed already)."""
        self.close(now, reason)

    # ------------------------------------------------------------------ helpers

    def _send(self, packet: Packet) -> None:
        self._out.append(encode(packet, self.version))
        self.metrics.messages_sent += 1
        self.notify()

    def _fail(self, exc: MQTTError, now: float) -> None:
        log.warning("closing %s: %s", self.name, exc)
        if self.state is ConnectionState.AWAITING_CONNECT:
            if exc.reason_code is ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                # The client's version is unknown: answer as 3.1.1 does [MQTT-3.1.2-2].
                self._out.append(encode(ConnAck(False, exc.reason_code), MQTT_3_1_1))
            self.close(now, str(exc))
        else:
            self.close(now, str(exc), exc.reason_code)

    def internal_error(self, now: float) -> None:
        """An unexpected exception (ours, not the client's) while serving this connection:
        log it with its traceback, count it, and end this connection only.

        Called from an `except` block. The connection's state may be half-updated, so
        closing it is itself guarded: whatever happens, it ends CLOSED.
        """
        log.exception("internal error while serving %s: closing its connection", self.name)
        self.metrics.connection_errors += 1
        try:
            self.close(now, "internal error", ReasonCode.UNSPECIFIED_ERROR)
        except Exception:
            log.exception("internal error while closing %s", self.name)
            self.state = ConnectionState.CLOSED
            self.on_output()

    def _require_session(self) -> Session:
        session = self.session
        if session is None:
            raise protocol_error("[MQTT-3.1.0-1] the first packet must be CONNECT")
        return session

    def _encode_deliveries(self, session: Session, out: list[bytes], now: float) -> None:
        """Move queued deliveries into `out`, within the client's receive window."""
        # The hot loop of every delivery: locals instead of attribute lookups.
        queue = session.queue
        inflight = session.inflight
        quota = self.send_quota
        version = self.version
        # 3.1.1 packets carry nothing per delivery; MQTT 5 ones may (ids, expiry, alias).
        shared_frames = version != MQTT_5 or not self.client_topic_alias_maximum
        max_size = self.max_send_packet_size
        counts_bytes = session.limits.max_queued_bytes
        sent = payload_bytes = 0
        while queue:
            delivery = queue[0]
            message = delivery.message
            expires_at = message.expires_at
            if expires_at is not None and expires_at <= now:
                session.pop_queued()
                continue
            qos = delivery.qos
            if qos and len(inflight) >= quota:
                break
            if counts_bytes:
                session.pop_queued()
            else:
                queue.popleft()
            if shared_frames and not delivery.dup and (version != MQTT_5 or not (
                    delivery.subscription_ids or expires_at is not None)):
                head, tail = message.frame(version, qos, delivery.retain)
                if max_size is not None and len(head) + len(tail) + 2 * (qos > 0) > max_size:
                    self._drop_oversize(message)
                    continue
                out.append(head)
                if qos:
                    out.append(session.start_flight(delivery).to_bytes(2, "big"))
                    out.append(tail)
            else:
                packet = self._publish_packet(delivery, now)
                if packet is None:
                    continue
                out.append(packet)
            sent += 1
            payload_bytes += len(message.payload)
        metrics = self.metrics
        metrics.publish_sent += sent
        metrics.messages_sent += sent
        metrics.publish_bytes_sent += payload_bytes

    def _publish_packet(self, delivery: Delivery, now: float, dup: bool = False) -> bytes | None:
        """A PUBLISH encoded for this delivery alone: with DUP, or MQTT 5 properties
        of its own (subscription identifiers, remaining expiry, a topic alias)."""
        message = delivery.message
        properties = message.properties
        topic = message.topic
        new_alias = None
        if self.version == MQTT_5:
            changes: dict[str, Any] = {}
            if delivery.subscription_ids:
                changes["subscription_identifiers"] = delivery.subscription_ids
            if message.expires_at is not None:
                changes["message_expiry_interval"] = message.remaining_expiry(now)
            if self.client_topic_alias_maximum:
                aliases = self.outgoing_aliases
                if aliases is None:
                    aliases = self.outgoing_aliases = {}
                alias = aliases.get(topic)
                if alias is not None:
                    topic = ""  # the client knows the topic by its alias already
                elif len(aliases) < self.client_topic_alias_maximum:
                    alias = new_alias = len(aliases) + 1
                changes["topic_alias"] = alias
            if changes:
                properties = replace(properties, **changes)
        session = self._require_session()
        packet_id = delivery.packet_id
        starts_flight = bool(delivery.qos and not packet_id)
        if starts_flight:
            packet_id = session.start_flight(delivery)
        packet = Publish(topic, message.payload, delivery.qos, delivery.retain,
                         dup or delivery.dup, packet_id or None, properties)
        data = encode(packet, self.version)
        if self.max_send_packet_size is not None and len(data) > self.max_send_packet_size:
            if starts_flight:
                del session.inflight[packet_id]
            self._drop_oversize(message)
            return None
        if new_alias is not None and self.outgoing_aliases is not None:
            self.outgoing_aliases[message.topic] = new_alias
        return data

    def _drop_oversize(self, message: Message) -> None:
        """[MQTT-3.1.2-25] a message too large for the client is discarded for it."""
        self.dropped()
        log.info("dropping message on %r for %s: larger than its maximum packet size",
                 message.topic, self.name)

    def dropped(self) -> None:
        """Count a delivery lost for this client (the caller has counted it for its session)."""
        self.metrics.publish_dropped += 1
        if self.counters is not None:
            self.counters.dropped += 1

    def resend_inflight(self, now: float) -> None:
        """After a session resumes: re-send unacknowledged PUBLISH (DUP) and PUBREL."""
        session = self._require_session()
        for packet_id, delivery in session.inflight.items():
            if delivery.state is DeliveryState.AWAITING_PUBCOMP:
                self._send(PubRel(packet_id))
            else:
                data = self._publish_packet(delivery, now, dup=True)
                if data is not None:
                    self._out.append(data)

    # ------------------------------------------------------------------ handlers

    def _handle_connect(self, packet: Connect, now: float) -> None:
        if self.state is not ConnectionState.AWAITING_CONNECT:
            raise protocol_error("[MQTT-3.1.0-2] a second CONNECT is a protocol violation")
        self.version = packet.protocol_level
        props = packet.properties
        if props.receive_maximum is not None:
            self.send_quota = min(props.receive_maximum, self.config.max_inflight_messages)
        self.max_send_packet_size = props.maximum_packet_size
        self.client_topic_alias_maximum = props.topic_alias_maximum or 0
        connack = self.broker.connect(self, packet, now)
        self._send(connack)
        if connack.reason_code >= 0x80:
            self.close(now, f"connection refused: {ReasonCode(connack.reason_code).name}")
            return
        self.state = ConnectionState.CONNECTED
        if self.counters is not None:
            self.counters.clients += 1
            self.counters.clients_total += 1
        if connack.session_present:
            self.resend_inflight(now)
        if self._require_session().queue:
            self.notify()

    def _handle_publish(self, packet: Publish, now: float) -> None:
        session = self.session
        client = self.client
        if session is None or client is None:
            raise protocol_error("[MQTT-3.1.0-1] the first packet must be CONNECT")
        config = self.config
        qos = packet.qos
        packet_id = packet.packet_id or 0
        topic = packet.topic
        props = packet.properties
        expires_at = None
        if self.version == MQTT_5:
            if qos > config.max_qos:
                raise RemoteProtocolError(
                    f"[MQTT-3.2.2-11] QoS {qos} exceeds the maximum QoS {config.max_qos}",
                    ReasonCode.QOS_NOT_SUPPORTED,
                )
            if packet.retain and not config.retain_available:
                raise RemoteProtocolError(
                    "[MQTT-3.2.2-14] retain is not available", ReasonCode.RETAIN_NOT_SUPPORTED
                )
            if props is not NO_PROPERTIES:
                if props.subscription_identifiers:
                    raise protocol_error(
                        "[MQTT-3.3.4-6] a client's PUBLISH must not carry a subscription "
                        "identifier")
                topic = self._resolve_alias(topic, props)
                if props.payload_format_indicator == 1 and not _is_utf8(packet.payload):
                    self._reject_publish(packet, ReasonCode.PAYLOAD_FORMAT_INVALID)
                    return
                if props.message_expiry_interval:
                    expires_at = now + props.message_expiry_interval
                props = _forwarded(props)
        broker = self.broker
        if (broker.hooks.acl_hooks or topic[0] == "$") and not broker.may_publish(client, topic):
            log.info("denied publish to %r by %s", topic, self.name)
            self._reject_publish(packet, ReasonCode.NOT_AUTHORIZED)
            return
        if qos == 2:
            if packet_id in session.incoming_qos2:
                self._send(PubRec(packet_id))
                return
            pending = len(session.incoming_qos2)
            if self.version == MQTT_5 and pending >= config.max_inflight_messages:
                raise RemoteProtocolError(
                    "[MQTT-3.3.4-7] more QoS 2 messages in flight than the receive maximum",
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                )
        metrics = self.metrics
        metrics.publish_received += 1
        metrics.publish_bytes_received += len(packet.payload)
        message = Message(topic, packet.payload, qos, packet.retain, props, expires_at,
                          client.client_id)
        if packet.raw is not None:
            message.arrived_as(packet.raw)
        matched = broker.publish(message, now, client)
        if qos == 1:
            if matched or self.version != MQTT_5:
                self._out.append(PUBACK_HEAD + packet_id.to_bytes(2, "big"))
                metrics.messages_sent += 1
                self.notify()
            else:
                self._send(PubAck(packet_id, ReasonCode.NO_MATCHING_SUBSCRIBERS))
        elif qos == 2:
            session.await_release(packet_id)
            self._send(PubRec(packet_id))

    def _window_opened(self, session: Session, now: float) -> None:
        """An acknowledgement freed a place in the client's receive window."""
        if session.shared_groups:
            self.broker.member_ready(session, now)
        if session.queue:
            self.notify()

    def _resolve_alias(self, topic: str, props: Properties) -> str:
        alias = props.topic_alias
        if alias is None:
            return topic
        if alias > self.broker.topic_alias_maximum:
            raise RemoteProtocolError(
                f"[MQTT-3.3.2-9] topic alias {alias} exceeds the maximum "
                f"{self.broker.topic_alias_maximum}", ReasonCode.TOPIC_ALIAS_INVALID,
            )
        aliases = self.topic_aliases
        if aliases is None:
            aliases = self.topic_aliases = {}
        if topic:
            aliases[alias] = topic
            return topic
        known = aliases.get(alias)
        if known is None:
            raise protocol_error(f"[MQTT-3.3.4-9] topic alias {alias} was never set")
        return known

    def _reject_publish(self, packet: Publish, code: ReasonCode) -> None:
        """Refuse one PUBLISH: MQTT 5 says why; 3.1.1 can only acknowledge and drop."""
        answer = code if self.version == MQTT_5 else ReasonCode.SUCCESS
        if packet.qos == 1:
            self._send(PubAck(packet.packet_id or 0, answer))
        elif packet.qos == 2:
            self._send(PubRec(packet.packet_id or 0, answer))

    def _handle_puback(self, packet: PubAck, now: float) -> None:
        session = self._require_session()
        if session.acknowledge(packet.packet_id, DeliveryState.AWAITING_PUBACK) is None:
            log.debug("%s acknowledged unknown packet id %d", self.name, packet.packet_id)
        else:
            self._window_opened(session, now)

    def _handle_pubrec(self, packet: PubRec, now: float) -> None:
        session = self._require_session()
        if packet.reason_code >= 0x80:
            session.acknowledge(packet.packet_id, DeliveryState.AWAITING_PUBREC)
            self._window_opened(session, now)
            return
        if session.received(packet.packet_id) is None:
            code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
            if packet.packet_id in session.inflight:  # a duplicate PUBREC: answer it again
                code = ReasonCode.SUCCESS
            self._send(PubRel(packet.packet_id, code if self.version == MQTT_5 else 0))
            return
        self._send(PubRel(packet.packet_id))

    def _handle_pubrel(self, packet: PubRel, now: float) -> None:
        session = self._require_session()
        if session.release(packet.packet_id):
            self._send(PubComp(packet.packet_id))
        else:
            code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.version == MQTT_5 else 0
            self._send(PubComp(packet.packet_id, code))

    def _handle_pubcomp(self, packet: PubComp, now: float) -> None:
        session = self._require_session()
        session.acknowledge(packet.packet_id, DeliveryState.AWAITING_PUBCOMP)
        self._window_opened(session, now)

    def _handle_subscribe(self, packet: Subscribe, now: float) -> None:
        session = self._require_session()
        identifiers = packet.properties.subscription_identifiers
        identifier = identifiers[0] if identifiers else None
        codes = [
            self.broker.subscribe(self, session, request, identifier, now)
            for request in packet.subscriptions
        ]
        # The SUBACK goes out before the retained messages the subscriptions queued.
        self._send(SubAck(packet.packet_id, tuple(codes)))

    def _handle_unsubscribe(self, packet: Unsubscribe, now: float) -> None:
        session = self._require_session()
        codes = tuple(
            ReasonCode.SUCCESS if self.broker.unsubscribe(session, topic_filter, now)
            else ReasonCode.NO_SUBSCRIPTION_EXISTED
            for topic_filter in packet.topic_filters
        )
        self._send(UnsubAck(packet.packet_id, codes if self.version == MQTT_5 else ()))

    def _handle_pingreq(self, packet: PingReq, now: float) -> None:
        self._require_session()
        self._out.append(PINGRESP)
        self.metrics.messages_sent += 1
        self.notify()

    def _handle_disconnect(self, packet: Disconnect, now: float) -> None:
        session = self._require_session()
        expiry = packet.properties.session_expiry_interval
        if expiry is not None:
            if session.expiry_interval == 0 and expiry != 0:
                raise protocol_error(
                    "[MQTT-3.14.2-2] session expiry cannot be set at DISCONNECT after 0 at CONNECT"
                )
            session.expiry_interval = self.broker.capped_expiry(expiry)
        self.graceful = packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        reason = "client disconnected"
        if packet.reason_code:
            reason += f" ({ReasonCode(packet.reason_code).name})"
        self.close(now, reason)

    def _handle_auth(self, packet: Auth, now: float) -> None:
        raise protocol_error(
            "[MQTT-4.12.0-1] AUTH without an authentication method agreed at CONNECT"
        )

    def _handle_unexpected(self, packet: Packet, now: float) -> None:
        if self.state is ConnectionState.AWAITING_CONNECT:
            raise protocol_error("[MQTT-3.1.0-1] the first packet must be CONNECT")
        raise protocol_error(f"a client must not send {type(packet).__name__}")

    _handlers: dict[type, Callable[[Connection, Any, float], None]] = {
        Connect: _handle_connect,
        Publish: _handle_publish,
        PubAck: _handle_puback,
        PubRec: _handle_pubrec,
        PubRel: _handle_pubrel,
        PubComp: _handle_pubcomp,
        Subscribe: _handle_subscribe,
        Unsubscribe: _handle_unsubscribe,
        PingReq: _handle_pingreq,
        Disconnect: _handle_disconnect,
        Auth: _handle_auth,
        ConnAck: _handle_unexpected,
        SubAck: _handle_unexpected,
        UnsubAck: _handle_unexpected,
        PingResp: _handle_unexpected,
    }


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def _forwarded(props: Properties) -> Properties:
    """The properties a subscriber receives: not the publisher's alias or expiry."""
    if props.topic_alias is None and props.message_expiry_interval is None:
        return props
    return replace(props, topic_alias=None, message_expiry_interval=None)

