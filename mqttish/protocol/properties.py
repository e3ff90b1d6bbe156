"""MQTT 5.0 properties (section 2.2.2): the table, the value, and the codec.

Every property has an identifier, a wire type and the set of packets that may
carry it. `Properties` holds one field per property; repeated properties (user
properties, subscription identifiers) are tuples. A 3.1.1 connection never
sees this module: its packets carry `NO_PROPERTIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from mqttish.errors import LocalProtocolError, malformed, protocol_error
from mqttish.protocol.wire import (
    decode_binary,
    decode_string,
    decode_varint,
    encode_binary,
    encode_string,
    encode_varint,
)


class PropType(Enum):
    BYTE = 1
    TWO_BYTE = 2
    FOUR_BYTE = 4
    VARINT = 5
    STRING = 6
    BINARY = 7
    STRING_PAIR = 8


# Packet kinds as the table names them; "will" is the will section of CONNECT.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = (
    "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
)
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH, WILL = (
    "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH", "WILL",
)
_ACKS = {PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK}
_ALL = {CONNECT, CONNACK, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, AUTH, WILL} | _ACKS


@dataclass(frozen=True, slots=True)
class PropertySpec:
    identifier: int
    name: str
    type: PropType
    packets: frozenset[str]
    repeatable: bool = False


def _spec(identifier: int, name: str, kind: PropType, packets: set[str],
          repeatable: bool = False) -> PropertySpec:
    return PropertySpec(identifier, name, kind, frozenset(packets), repeatable)


_B, _2, _4, _V, _S, _BIN, _PAIR = (
    PropType.BYTE, PropType.TWO_BYTE, PropType.FOUR_BYTE, PropType.VARINT,
    PropType.STRING, PropType.BINARY, PropType.STRING_PAIR,
)

SPECS: tuple[PropertySpec, ...] = (
    _spec(0x01, "payload_format_indicator", _B, {PUBLISH, WILL}),
    _spec(0x02, "message_expiry_interval", _4, {PUBLISH, WILL}),
    _spec(0x03, "content_type", _S, {PUBLISH, WILL}),
    _spec(0x08, "response_topic", _S, {PUBLISH, WILL}),
    _spec(0x09, "correlation_data", _BIN, {PUBLISH, WILL}),
    _spec(0x0B, "subscription_identifiers", _V, {PUBLISH, SUBSCRIBE}, repeatable=True),
    _spec(0x11, "session_expiry_interval", _4, {CONNECT, CONNACK, DISCONNECT}),
    _spec(0x12, "assigned_client_identifier", _S, {CONNACK}),
    _spec(0x13, "server_keep_alive", _2, {CONNACK}),
    _spec(0x15, "authentication_method", _S, {CONNECT, CONNACK, AUTH}),
    _spec(0x16, "authentication_data", _BIN, {CONNECT, CONNACK, AUTH}),
    _spec(0x17, "request_problem_information", _B, {CONNECT}),
    _spec(0x18, "will_delay_interval", _4, {WILL}),
    _spec(0x19, "request_response_information", _B, {CONNECT}),
    _spec(0x1A, "response_information", _S, {CONNACK}),
    _spec(0x1C, "server_reference", _S, {CONNACK, DISCONNECT}),
    _spec(0x1F, "reason_string", _S, {CONNACK, DISCONNECT, AUTH} | _ACKS),
    _spec(0x21, "receive_maximum", _2, {CONNECT, CONNACK}),
    _spec(0x22, "topic_alias_maximum", _2, {CONNECT, CONNACK}),
    _spec(0x23, "topic_alias", _2, {PUBLISH}),
    _spec(0x24, "maximum_qos", _B, {CONNACK}),
    _spec(0x25, "retain_available", _B, {CONNACK}),
    _spec(0x26, "user_properties", _PAIR, _ALL, repeatable=True),
    _spec(0x27, "maximum_packet_size", _4, {CONNECT, CONNACK}),
    _spec(0x28, "wildcard_subscription_available", _B, {CONNACK}),
    _spec(0x29, "subscription_identifier_available", _B, {CONNACK}),
    _spec(0x2A, "shared_subscription_available", _B, {CONNACK}),
)
SPEC_BY_ID = {spec.identifier: spec for spec in SPECS}
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}

# Properties whose only legal values are 0 and 1, and those that must not be 0.
_BOOLEAN = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_NON_ZERO = {0x0B, 0x21, 0x23, 0x27}


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """The properties of one packet; None (or an empty tuple) means absent."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def present(self) -> list[tuple[PropertySpec, Any]]:
        """The properties that are set, in table order."""
        out = []
        for spec in SPECS:
            value = getattr(self, spec.name)
            if value is not None and value != ():
                out.append((spec, value))
        return out

    def __bool__(self) -> bool:
        return self is not NO_PROPERTIES and bool(self.present())

    def __repr__(self) -> str:
        shown = ", ".join(f"{spec.name}={value!r}" for spec, value in self.present())
        return f"Properties({shown})"


NO_PROPERTIES = Properties()
SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # a Session Expiry Interval that means "never" [MQTT-3.1.2.11.2]
_FIELD_NAMES = [f.name for f in fields(Properties)]
assert [spec.name for spec in SPECS] == _FIELD_NAMES, "Properties fields must follow SPECS"


def _encode_value(spec: PropertySpec, value: Any) -> bytes:
    kind = spec.type
    if kind is PropType.BYTE:
        return bytes((value,))
    if kind is PropType.TWO_BYTE:
        return int(value).to_bytes(2, "big")
    if kind is PropType.FOUR_BYTE:
        return int(value).to_bytes(4, "big")
    if kind is PropType.VARINT:
        return encode_varint(value)
    if kind is PropType.STRING:
        return encode_string(value)
    if kind is PropType.BINARY:
        return encode_binary(value)
    name, text = value
    return encode_string(name) + encode_string(text)


def encode_properties(props: Properties, packet: str) -> bytes:
    """The property length followed by the properties, as `packet` may carry them."""
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for spec, value in props.present():
        if packet not in spec.packets:
            raise LocalProtocolError(f"property {spec.name} is not allowed in {packet}")
        prefix = bytes((spec.identifier,))
        if spec.repeatable:
            parts.extend(prefix + _encode_value(spec, item) for item in value)
        else:
            parts.append(prefix + _encode_value(spec, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def decode_properties(data: bytes, pos: int, end: int, packet: str) -> tuple[Properties, int]:
    """Decode a property section starting at `pos`; return it and the position after it."""
    length, pos = decode_varint(data, pos, end)
    if length == 0:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise malformed("[MQTT-2.2.2] property length exceeds the packet")
    values: dict[str, Any] = {}
    while pos < stop:
        identifier, pos = decode_varint(data, pos, stop)
        spec = SPEC_BY_ID.get(identifier)
        if spec is None:
            raise malformed(f"[MQTT-2.2.2] unknown property identifier 0x{identifier:02X}")
        if packet not in spec.packets:
            raise protocol_error(f"[MQTT-2.2.2] property {spec.name} is not allowed in {packet}")
        value, pos = _decode_value(spec, data, pos, stop)
        if spec.identifier in _BOOLEAN and value not in (0, 1):
            raise protocol_error(f"[MQTT-3] property {spec.name} must be 0 or 1")
        if spec.identifier in _NON_ZERO and value == 0:
            raise protocol_error(f"[MQTT-3] property {spec.name} must not be 0")
        if spec.repeatable:
            values[spec.name] = (*values.get(spec.name, ()), value)
        elif spec.name in values:
            raise protocol_error(f"[MQTT-2.2.2] property {spec.name} appears twice")
        else:
            values[spec.name] = value
    if pos != stop:
        raise malformed("[MQTT-2.2.2] property overruns the property length")
    return Properties(**values), stop


def _decode_value(spec: PropertySpec, data: bytes, pos: int, end: int) -> tuple[Any, int]:
    kind = spec.type
    if kind is PropType.BYTE:
        if pos + 1 > end:
            raise malformed("[MQTT-2.2.2] truncated property")
        return data[pos], pos + 1
    if kind is PropType.TWO_BYTE or kind is PropType.FOUR_BYTE:
        size = kind.value
        if pos + size > end:
            raise malformed("[MQTT-2.2.2] truncated property")
        return int.from_bytes(data[pos:pos + size], "big"), pos + size
    if kind is PropType.VARINT:
        return decode_varint(data, pos, end)
    if kind is PropType.STRING:
        return decode_string(data, pos, end)
    if kind is PropType.BINARY:
        return decode_binary(data, pos, end)
    name, pos = decode_string(data, pos, end)
    text, pos = decode_string(data, pos, end)
    return (name, text), pos
