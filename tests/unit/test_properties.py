"""The MQTT 5 property codec on its own: every type, any order, and the table's rules."""

import pytest

from mqttish.errors import LocalProtocolError, RemoteProtocolError
from mqttish.protocol import properties as P
from mqttish.protocol.properties import (
    NO_PROPERTIES,
    SPECS,
    Properties,
    decode_properties,
    encode_properties,
)

EVERY_TYPE = Properties(
    payload_format_indicator=1,            # byte
    topic_alias=0x1234,                    # two byte integer
    message_expiry_interval=0x01020304,    # four byte integer
    subscription_identifiers=(1, 300, 268_435_455),  # variable byte integers, repeated
    content_type="text/plain; ü",          # UTF-8 string
    correlation_data=b"\x00\xff",          # binary data
    user_properties=(("k", "v"), ("k", "v2")),  # string pairs, repeated, order kept
)


def test_every_type_round_trips() -> None:
    raw = encode_properties(EVERY_TYPE, P.PUBLISH)
    assert decode_properties(raw, 0, len(raw), P.PUBLISH) == (EVERY_TYPE, len(raw))


def test_empty_properties_are_one_zero_byte() -> None:
    assert encode_properties(NO_PROPERTIES, P.CONNACK) == b"\x00"
    assert decode_properties(b"\x00", 0, 1, P.CONNACK) == (NO_PROPERTIES, 1)


def test_order_on_the_wire_does_not_matter() -> None:
    forwards = b"\x05\x21\x00\x14\x24\x01"
    backwards = b"\x05\x24\x01\x21\x00\x14"
    expected = Properties(receive_maximum=20, maximum_qos=1)
    assert decode_properties(forwards, 0, 6, P.CONNACK)[0] == expected
    assert decode_properties(backwards, 0, 6, P.CONNACK)[0] == expected


def test_table_has_every_property_of_the_spec() -> None:
    assert len(SPECS) == 27
    assert {spec.identifier for spec in SPECS} == {
        0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19,
        0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A}


def test_encoding_a_property_where_it_is_not_allowed_is_our_error() -> None:
    with pytest.raises(LocalProtocolError, match="not allowed in PUBACK"):
        encode_properties(Properties(topic_alias=1), P.PUBACK)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x02\x0b\x00", "subscription_identifiers must not be 0"),
    (b"\x03\x21\x00\x00", "receive_maximum must not be 0"),
    (b"\x02\x24\x02", "maximum_qos must be 0 or 1"),
    (b"\x02\x21\x00", "truncated"),
    (b"\x05\x21\x00", "exceeds the packet"),
])
def test_invalid_values(raw: bytes, message: str) -> None:
    kind = P.PUBLISH if raw[1] == 0x0B else P.CONNACK
    with pytest.raises(RemoteProtocolError, match=message):
        decode_properties(raw, 0, len(raw), kind)
