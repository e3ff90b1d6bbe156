"""Encode packets to bytes and decode bytes to packets, for MQTT 3.1, 3.1.1 and 5.0.

Theory of operation: `encode(packet, version)` is a pure function. Decoding is
incremental: `PacketDecoder.feed(data)` takes whatever the transport read and
`next()` returns one packet or `NEED_DATA`. The fixed header is read first, so
an oversize packet is refused before its body is buffered. Every malformed
input raises `RemoteProtocolError` naming the spec rule it breaks; nothing else
escapes the decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

from mqttish.errors import LocalProtocolError, RemoteProtocolError, malformed, protocol_error
from mqttish.log_text import clip
from mqttish.protocol import properties as P
from mqttish.protocol.bounded_cache import BoundedCache
from mqttish.protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    PROTOCOL_NAMES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RetainHandling,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, decode_properties, encode_properties
from mqttish.protocol.reason_codes import (
    ALLOWED_REASON_CODES,
    REASON_CODE_RULES,
    ReasonCode,
    connack_code_from_v3,
    connack_code_to_v3,
    suback_code_to_v3,
)
from mqttish.protocol.topics import validate_subscription_filter, validate_topic_name
from mqttish.protocol.wire import (
    MAX_VARINT,
    check_string,
    decode_binary,
    decode_string,
    decode_uint16,
    decode_varint,
    encode_binary,
    encode_string,
    encode_varint,
)

KNOWN_TOPICS_BYTES = 2 * 1024 * 1024
MAX_CACHED_TOPIC = 2048  # bytes charged for one entry; longer topics are not worth caching


class _NeedData:
    """Sentinel: the decoder needs more bytes before it can return a packet."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


# --------------------------------------------------------------------------- encoding


def _frame(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def _packet_id(packet_id: int | None) -> bytes:
    if not packet_id or packet_id > 0xFFFF:
        raise LocalProtocolError(f"[MQTT-2.3.1-1] invalid packet identifier {packet_id!r}")
    return packet_id.to_bytes(2, "big")


BRIDGE_BIT = 0x80  # in CONNECT's protocol level: a bridge between brokers (Connect.bridge)


def _encode_connect(packet: Connect, version: int) -> bytes:
    will = packet.will
    flags = 0x02 if packet.clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.password is not None:
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    parts = [
        encode_string(packet.name),
        bytes((packet.protocol_level | (BRIDGE_BIT if packet.bridge else 0), flags)),
        packet.keepalive.to_bytes(2, "big"),
    ]
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties, P.CONNECT))
    parts.append(encode_string(packet.client_id))
    if will is not None:
        if version == MQTT_5:
            parts.append(encode_properties(will.properties, P.WILL))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if packet.username is not None:
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _frame(0x10, b"".join(parts))


def _encode_connack(packet: ConnAck, version: int) -> bytes:
    flags = 1 if packet.session_present else 0
    if version != MQTT_5:
        return bytes((0x20, 2, flags, connack_code_to_v3(packet.reason_code)))
    body = bytes((flags, packet.reason_code)) + encode_properties(packet.properties, P.CONNACK)
    return _frame(0x20, body)


def publish_header(packet: Publish) -> int:
    return 0x30 | (0x08 if packet.dup else 0) | (packet.qos << 1) | (1 if packet.retain else 0)


def _encode_publish(packet: Publish, version: int) -> bytes:
    if packet.qos not in (0, 1, 2):
        raise LocalProtocolError(f"[MQTT-3.3.1-4] invalid QoS {packet.qos}")
    parts = [encode_string(packet.topic)]
    if packet.qos:
        parts.append(_packet_id(packet.packet_id))
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties, P.PUBLISH))
    parts.append(packet.payload)
    return _frame(publish_header(packet), b"".join(parts))


PINGRESP = b"\xd0\x00"
_PUBACK_HEAD = b"\x40\x02"


def encode_puback(packet_id: int) -> bytes:
    """A successful PUBACK, the same in 3.1.1 and 5.0: the hot path's shortcut."""
    return _PUBACK_HEAD + packet_id.to_bytes(2, "big")


def publish_frame(topic: bytes, qos: int, retain: bool, tail: bytes) -> tuple[bytes, bytes]:
    """A PUBLISH split around its packet identifier: (head, tail). `topic` is the encoded
    topic name, `tail` the (MQTT 5) properties and payload; for QoS 0 there is no
    identifier, so head is the whole packet and tail is empty. One frame is shared by
    every delivery that adds nothing of its own."""
    remaining = len(topic) + (2 if qos else 0) + len(tail)
    head = bytes((0x30 | (qos << 1) | retain,)) + encode_varint(remaining) + topic
    return (head, tail) if qos else (head + tail, b"")


def _ack_encoder(first_byte: int, kind: str) -> Callable[[PubAck, int], bytes]:
    def encode_ack(packet: PubAck, version: int) -> bytes:
        pid = _packet_id(packet.packet_id)
        if version != MQTT_5 or (packet.reason_code == 0 and not packet.properties):
            return bytes((first_byte, 2)) + pid
        if not packet.properties:
            return bytes((first_byte, 3)) + pid + bytes((packet.reason_code,))
        props = encode_properties(packet.properties, kind)
        return _frame(first_byte, pid + bytes((packet.reason_code,)) + props)

    return encode_ack


def _encode_subscribe(packet: Subscribe, version: int) -> bytes:
    parts = [_packet_id(packet.packet_id)]
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties, P.SUBSCRIBE))
    for sub in packet.subscriptions:
        options = sub.qos
        if version == MQTT_5:
            options |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | (int(sub.retain_handling) << 4)
            )
        parts.append(encode_string(sub.topic_filter) + bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _encode_suback(packet: SubAck, version: int) -> bytes:
    if version == MQTT_5:
        codes = bytes(packet.reason_codes)
        props = encode_properties(packet.properties, P.SUBACK)
        return _frame(0x90, _packet_id(packet.packet_id) + props + codes)
    codes = bytes(suback_code_to_v3(code) for code in packet.reason_codes)
    return _frame(0x90, _packet_id(packet.packet_id) + codes)


def _encode_unsubscribe(packet: Unsubscribe, version: int) -> bytes:
    parts = [_packet_id(packet.packet_id)]
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties, P.UNSUBSCRIBE))
    parts.extend(encode_string(topic_filter) for topic_filter in packet.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(packet: UnsubAck, version: int) -> bytes:
    pid = _packet_id(packet.packet_id)
    if version != MQTT_5:
        return b"\xb0\x02" + pid
    props = encode_properties(packet.properties, P.UNSUBACK)
    return _frame(0xB0, pid + props + bytes(packet.reason_codes))


def _encode_pingreq(packet: PingReq, version: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(packet: PingResp, version: int) -> bytes:
    return PINGRESP


def _reason_and_properties(first_byte: int, kind: str) -> Callable[[Disconnect | Auth, int], bytes]:
    def encode_packet(packet: Disconnect | Auth, version: int) -> bytes:
        if version != MQTT_5:
            if first_byte == 0xF0:
                raise LocalProtocolError("AUTH exists only in MQTT 5.0")
            return bytes((first_byte, 0))
        if packet.reason_code == 0 and not packet.properties:
            return bytes((first_byte, 0))
        if not packet.properties:
            return bytes((first_byte, 1, packet.reason_code))
        props = encode_properties(packet.properties, kind)
        return _frame(first_byte, bytes((packet.reason_code,)) + props)

    return encode_packet


# Each encoder takes its own packet type; the table is indexed by that type.
_ENCODERS: dict[type[Packet], Callable[[Any, int], bytes]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: _ack_encoder(0x40, P.PUBACK),
    PubRec: _ack_encoder(0x50, P.PUBREC),
    PubRel: _ack_encoder(0x62, P.PUBREL),
    PubComp: _ack_encoder(0x70, P.PUBCOMP),
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: _encode_pingreq,
    PingResp: _encode_pingresp,
    Disconnect: _reason_and_properties(0xE0, P.DISCONNECT),
    Auth: _reason_and_properties(0xF0, P.AUTH),
}


def encode(packet: Packet, version: int = MQTT_3_1_1) -> bytes:
    """The bytes of `packet` as a peer speaking protocol level `version` expects them."""
    return _ENCODERS[type(packet)](packet, version)


# --------------------------------------------------------------------------- decoding


def _expect_end(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise malformed(f"[MQTT-2.1.4] {what} has {end - pos} unexpected trailing bytes")


def _nonzero_packet_id(data: bytes, pos: int, end: int) -> tuple[int, int]:
    packet_id, pos = decode_uint16(data, pos, end)
    if packet_id == 0:
        raise malformed("[MQTT-2.3.1-1] packet identifier must be non-zero")
    return packet_id, pos


def _reason_code(code: int, kind: str) -> int:
    """`code`, if packets of `kind` may carry it (MQTT 5.0)."""
    if code not in ALLOWED_REASON_CODES[kind]:
        raise protocol_error(f"[{REASON_CODE_RULES[kind]}] {kind} cannot carry reason code "
                             f"0x{code:02X}")
    return code


def _decode_connect(data: bytes, pos: int, end: int, flags: int, version: int) -> Connect:
    name, pos = decode_string(data, pos, end)
    if pos >= end:
        raise malformed("[MQTT-3.1.2] CONNECT truncated before protocol level")
    level = data[pos] & ~BRIDGE_BIT
    bridge = data[pos] != level
    if name not in ("MQTT", "MQIsdp"):
        raise protocol_error(f"[MQTT-3.1.2-1] unknown protocol name {clip(name)}")
    if (name, level) not in (("MQTT", MQTT_3_1_1), ("MQTT", MQTT_5), ("MQIsdp", MQTT_3_1)):
        raise RemoteProtocolError(
            f"[MQTT-3.1.2-2] unsupported protocol {name!r} level {level}",
            ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
        )
    if pos + 4 > end:
        raise malformed("[MQTT-3.1.2] CONNECT variable header truncated")
    connect_flags = data[pos + 1]
    keepalive = (data[pos + 2] << 8) | data[pos + 3]
    pos += 4
    if connect_flags & 0x01:
        raise malformed("[MQTT-3.1.2-3] reserved CONNECT flag must be 0")
    has_will = bool(connect_flags & 0x04)
    will_qos = (connect_flags >> 3) & 3
    will_retain = bool(connect_flags & 0x20)
    has_password = bool(connect_flags & 0x40)
    has_username = bool(connect_flags & 0x80)
    if not has_will and (will_qos or will_retain):
        raise malformed("[MQTT-3.1.2-11] will QoS and retain must be 0 without a will")
    if will_qos == 3:
        raise malformed("[MQTT-3.1.2-14] will QoS must not be 3")
    if has_password and not has_username and level != MQTT_5:
        raise malformed("[MQTT-3.1.2-22] password flag set without user name flag")
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, pos = decode_properties(data, pos, end, P.CONNECT)
    client_id, pos = decode_string(data, pos, end)
    will = None
    if has_will:
        will_properties = NO_PROPERTIES
        if level == MQTT_5:
            will_properties, pos = decode_properties(data, pos, end, P.WILL)
        will_topic, pos = decode_string(data, pos, end)
        validate_topic_name(will_topic)
        will_payload, pos = decode_binary(data, pos, end)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_properties)
    username = password = None
    if has_username:
        username, pos = decode_string(data, pos, end)
    if has_password:
        password, pos = decode_binary(data, pos, end)
    _expect_end(pos, end, "CONNECT")
    return Connect(
        client_id=client_id,
        protocol_level=level,
        clean_start=bool(connect_flags & 0x02),
        keepalive=keepalive,
        will=will,
        username=username,
        password=password,
        properties=properties,
        protocol_name=name,
        bridge=bridge,
    )


def _decode_connack(data: bytes, pos: int, end: int, flags: int, version: int) -> ConnAck:
    if pos + 2 > end:
        raise malformed("[MQTT-3.2.2] CONNACK truncated")
    ack_flags, code = data[pos], data[pos + 1]
    if ack_flags & 0xFE:
        raise malformed("[MQTT-3.2.2-1] reserved CONNACK flags must be 0")
    pos += 2
    if version == MQTT_5:
        _reason_code(code, P.CONNACK)
        properties, pos = decode_properties(data, pos, end, P.CONNACK)
    else:
        properties = NO_PROPERTIES
        if code > 5:
            raise malformed(f"[MQTT-3.2.2.3] unknown CONNACK return code {code}")
        code = connack_code_from_v3(code)
    _expect_end(pos, end, "CONNACK")
    return ConnAck(bool(ack_flags), code, properties)


# Topic names repeat (a sensor publishes to the same one all day): remember the
# ones already validated, so each is decoded and checked once.
_known_topics: BoundedCache[bytes, str] = BoundedCache(KNOWN_TOPICS_BYTES, MAX_CACHED_TOPIC)


def _check_topic_name(raw: bytes) -> str:
    topic = check_string(raw)
    if "+" in topic or "#" in topic:
        validate_topic_name(topic)
    if topic:
        _known_topics.put(raw, topic, 2 * len(raw))
    return topic


def _decode_publish(data: bytes, pos: int, end: int, flags: int, version: int) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise malformed("[MQTT-3.3.1-4] PUBLISH QoS must not be 3")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise malformed("[MQTT-3.3.1-2] DUP must be 0 for QoS 0 messages")
    if pos + 2 > end:
        raise malformed("[MQTT-3.3.2] PUBLISH truncated before topic name")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise malformed("[MQTT-1.5.4] topic name overruns the packet")
    raw_topic = data[pos + 2:stop]
    topic = _known_topics.get(raw_topic)
    if topic is None:
        topic = _check_topic_name(raw_topic)
    pos = stop
    packet_id = None
    if qos:
        packet_id, pos = _nonzero_packet_id(data, pos, end)
    properties = NO_PROPERTIES
    if version == MQTT_5:
        properties, pos = decode_properties(data, pos, end, P.PUBLISH)
    if not topic and properties.topic_alias is None:
        validate_topic_name(topic)
    return Publish(topic, data[pos:end], qos, bool(flags & 1), dup, packet_id, properties)


def decode_publish_frame(data: bytes, pos: int, version: int) -> tuple[Publish, int]:
    """The whole PUBLISH packet at `pos`, and where it ends: the nodes of a cluster pass
    messages to each other as the packets they become."""
    first = data[pos]
    if first >> 4 != 3:
        raise malformed("expected a PUBLISH packet")
    length, start = decode_varint(data, pos + 1, len(data))
    end = start + length
    if end > len(data):
        raise malformed("[MQTT-2.1.4] PUBLISH overruns its frame")
    return _decode_publish(data, start, end, first & 0x0F, version), end


_Ack = TypeVar("_Ack", PubAck, PubRec, PubRel, PubComp)


def _ack_decoder(cls: type[_Ack], kind: str) -> Callable[..., _Ack]:
    def decode_ack(data: bytes, pos: int, end: int, flags: int, version: int) -> _Ack:
        packet_id, pos = _nonzero_packet_id(data, pos, end)
        reason_code = 0
        properties = NO_PROPERTIES
        if version == MQTT_5 and pos < end:
            reason_code = _reason_code(data[pos], kind)
            pos += 1
            if pos < end:
                properties, pos = decode_properties(data, pos, end, kind)
        _expect_end(pos, end, kind)
        return cls(packet_id, reason_code, properties)

    return decode_ack


def _decode_subscribe(data: bytes, pos: int, end: int, flags: int, version: int) -> Subscribe:
    packet_id, pos = _nonzero_packet_id(data, pos, end)
    properties = NO_PROPERTIES
    if version == MQTT_5:
        properties, pos = decode_properties(data, pos, end, P.SUBSCRIBE)
        if len(properties.subscription_identifiers) > 1:
            raise protocol_error("[MQTT-3.8.2.1.2] SUBSCRIBE carries one subscription identifier")
    subscriptions = []
    while pos < end:
        topic_filter, pos = decode_string(data, pos, end)
        if pos >= end:
            raise malformed("[MQTT-3.8.3] subscription options missing")
        options = data[pos]
        pos += 1
        qos = options & 0x03
        if qos == 3:
            raise malformed("[MQTT-3.8.3-4] requested QoS must not be 3")
        if version == MQTT_5:
            if options & 0xC0:
                raise malformed("[MQTT-3.8.3-5] reserved subscription option bits must be 0")
            handling = (options >> 4) & 0x03
            if handling == 3:
                raise protocol_error("[MQTT-3.8.3.1] retain handling must not be 3")
            request = SubscriptionRequest(
                topic_filter, qos, bool(options & 0x04), bool(options & 0x08),
                RetainHandling(handling),
            )
        else:
            if options & 0xFC:
                raise malformed("[MQTT-3-8.3-4] reserved bits of requested QoS must be 0")
            request = SubscriptionRequest(topic_filter, qos)
        validate_subscription_filter(topic_filter)
        subscriptions.append(request)
    if not subscriptions:
        raise protocol_error("[MQTT-3.8.3-3] SUBSCRIBE must contain at least one topic filter")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _decode_suback(data: bytes, pos: int, end: int, flags: int, version: int) -> SubAck:
    packet_id, pos = _nonzero_packet_id(data, pos, end)
    properties = NO_PROPERTIES
    if version == MQTT_5:
        properties, pos = decode_properties(data, pos, end, P.SUBACK)
        codes = tuple(_reason_code(code, P.SUBACK) for code in data[pos:end])
    else:
        codes = tuple(data[pos:end])
    return SubAck(packet_id, codes, properties)


def _decode_unsubscribe(data: bytes, pos: int, end: int, flags: int, version: int) -> Unsubscribe:
    packet_id, pos = _nonzero_packet_id(data, pos, end)
    properties = NO_PROPERTIES
    if version == MQTT_5:
        properties, pos = decode_properties(data, pos, end, P.UNSUBSCRIBE)
    filters = []
    while pos < end:
        topic_filter, pos = decode_string(data, pos, end)
        validate_subscription_filter(topic_filter)
        filters.append(topic_filter)
    if not filters:
        raise protocol_error("[MQTT-3.10.3-2] UNSUBSCRIBE must contain at least one topic filter")
    return Unsubscribe(packet_id, tuple(filters), properties)


def _decode_unsuback(data: bytes, pos: int, end: int, flags: int, version: int) -> UnsubAck:
    packet_id, pos = _nonzero_packet_id(data, pos, end)
    if version != MQTT_5:
        _expect_end(pos, end, "UNSUBACK")
        return UnsubAck(packet_id)
    properties, pos = decode_properties(data, pos, end, P.UNSUBACK)
    codes = tuple(_reason_code(code, P.UNSUBACK) for code in data[pos:end])
    return UnsubAck(packet_id, codes, properties)


def _decode_pingreq(data: bytes, pos: int, end: int, flags: int, version: int) -> PingReq:
    _expect_end(pos, end, "PINGREQ")
    return PingReq()


def _decode_pingresp(data: bytes, pos: int, end: int, flags: int, version: int) -> PingResp:
    _expect_end(pos, end, "PINGRESP")
    return PingResp()


def _decode_disconnect(data: bytes, pos: int, end: int, flags: int, version: int) -> Disconnect:
    reason_code = 0
    properties = NO_PROPERTIES
    if version == MQTT_5 and pos < end:
        reason_code = _reason_code(data[pos], P.DISCONNECT)
        pos += 1
        if pos < end:
            properties, pos = decode_properties(data, pos, end, P.DISCONNECT)
    _expect_end(pos, end, "DISCONNECT")
    return Disconnect(reason_code, properties)


def _decode_auth(data: bytes, pos: int, end: int, flags: int, version: int) -> Auth:
    if version != MQTT_5:
        raise malformed("[MQTT-2.2.1] packet type 15 is reserved before MQTT 5.0")
    reason_code = 0
    properties = NO_PROPERTIES
    if pos < end:
        reason_code = _reason_code(data[pos], P.AUTH)
        pos += 1
        if pos < end:
            properties, pos = decode_properties(data, pos, end, P.AUTH)
    _expect_end(pos, end, "AUTH")
    return Auth(reason_code, properties)


_Decoder = Callable[[bytes, int, int, int, int], Packet]
# Indexed by packet type; the second item is the fixed-header flags the type requires.
_DECODERS_BY_TYPE: dict[PacketType, tuple[_Decoder, int | None]] = {
    PacketType.CONNECT: (_decode_connect, 0),
    PacketType.CONNACK: (_decode_connack, 0),
    PacketType.PUBLISH: (_decode_publish, None),
    PacketType.PUBACK: (_ack_decoder(PubAck, P.PUBACK), 0),
    PacketType.PUBREC: (_ack_decoder(PubRec, P.PUBREC), 0),
    PacketType.PUBREL: (_ack_decoder(PubRel, P.PUBREL), 2),
    PacketType.PUBCOMP: (_ack_decoder(PubComp, P.PUBCOMP), 0),
    PacketType.SUBSCRIBE: (_decode_subscribe, 2),
    PacketType.SUBACK: (_decode_suback, 0),
    PacketType.UNSUBSCRIBE: (_decode_unsubscribe, 2),
    PacketType.UNSUBACK: (_decode_unsuback, 0),
    PacketType.PINGREQ: (_decode_pingreq, 0),
    PacketType.PINGRESP: (_decode_pingresp, 0),
    PacketType.DISCONNECT: (_decode_disconnect, 0),
    PacketType.AUTH: (_decode_auth, 0),
}
# Looked up with the plain int of each fixed header: int keys hash and compare fastest.
_DECODERS = {int(packet_type): entry for packet_type, entry in _DECODERS_BY_TYPE.items()}


# An idle connection's decoder shares this empty list; `feed` never appends to it.
_NO_PARTS: list[bytes] = []


class PacketDecoder:
    """Incremental decoder: feed bytes as they arrive, take packets as they complete.

    `version` is the protocol level used to decode packets other than CONNECT;
    a server-side decoder learns it from the CONNECT it decodes.
    """

    __slots__ = ("_buf", "_need", "_parts", "_parts_len", "_pos", "max_packet_size", "version")

    def __init__(self, version: int = MQTT_3_1_1, max_packet_size: int = MAX_VARINT + 5) -> None:
        self.version = version
        self.max_packet_size = max_packet_size
        self._buf = b""
        self._pos = 0
        self._need = 0
        self._parts: list[bytes] = _NO_PARTS  # a list of its own once a packet is split
        self._parts_len = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self._buf) - self._pos + self._parts_len

    def feed(self, data: bytes | bytearray) -> None:
        if not data:
            return
        if not self._parts and self._pos >= len(self._buf):
            self._buf = bytes(data)
            self._pos = 0
            return
        # Collect pieces of a partial packet until enough have arrived, so that
        # a large packet trickling in is joined once, not once per read.
        if self._parts is _NO_PARTS:
            self._parts = []
        self._parts.append(bytes(data))
        self._parts_len += len(data)
        if self.buffered >= self._need:
            self._merge()

    def _merge(self) -> None:
        self._buf = self._buf[self._pos:] + b"".join(self._parts)
        self._pos = 0
        self._parts.clear()
        self._parts_len = 0

    def next(self) -> Packet | _NeedData:
        """The next complete packet, or NEED_DATA."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2:
            return self._need_more(2)
        first = buf[pos]
        length = buf[pos + 1]
        header = 2
        if length & 0x80:
            length &= 0x7F
            shift = 7
            while True:
                if header > 4:
                    raise malformed("[MQTT-1.5.5] remaining length longer than 4 bytes")
                if avail <= header:
                    return self._need_more(header + 1)
                byte = buf[pos + header]
                header += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
        total = header + length
        if total > self.max_packet_size:
            raise RemoteProtocolError(
                f"[MQTT-3.1.2-24] packet of {total} bytes exceeds the maximum packet size "
                f"of {self.max_packet_size}",
                ReasonCode.PACKET_TOO_LARGE,
            )
        if avail < total:
            return self._need_more(total)
        self._pos = pos + total
        packet_type = first >> 4
        entry = _DECODERS.get(packet_type)
        if entry is None:
            raise malformed("[MQTT-2.2.1] packet type 0 is reserved")
        decode, required_flags = entry
        flags = first & 0x0F
        if required_flags is not None and flags != required_flags:
            raise malformed(f"[MQTT-2.2.2-2] invalid fixed header flags 0x{flags:X}")
        packet = decode(buf, pos + header, pos + total, flags, self.version)
        if packet_type == 3:  # PUBLISH
            if not flags and self.version != MQTT_5:
                cast(Publish, packet).raw = buf[pos:pos + total]
        elif packet_type == 1:  # CONNECT
            self.version = cast(Connect, packet).protocol_level
        return packet

    def take_puback(self) -> int:
        """The packet id of the next packet if it is a PUBACK of four bytes (no reason
        code), consumed; 0, with nothing consumed, if it is anything else. Most of what
        a subscriber sends is these: its broker handles them without building a packet
        each."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos >= 4 and buf[pos] == 0x40 and buf[pos + 1] == 2:
            packet_id = buf[pos + 2] << 8 | buf[pos + 3]
            if packet_id:  # (id 0 is malformed: `next` says so)
                self._pos = pos + 4
                return packet_id
        return 0

    def _need_more(self, size: int) -> Packet | _NeedData:
        self._need = size
        if self._pos >= len(self._buf):
            self._buf = b""  # do not keep the last read alive while the client is idle
            self._pos = 0
        if self._parts and self.buffered >= size:
            self._merge()
            return self.next()
        return NEED_DATA

    def __iter__(self) -> PacketDecoder:
        return self

    def __next__(self) -> Packet:
        packet = self.next()
        if packet is NEED_DATA:
            raise StopIteration
        return cast(Packet, packet)


__all__ = ["MQTT_3_1", "MQTT_3_1_1", "MQTT_5", "NEED_DATA", "PROTOCOL_NAMES", "PacketDecoder",
           "encode"]
