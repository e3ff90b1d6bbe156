"""The codec against the raw-bytes table, byte-at-a-time feeding, and malformed input."""

import pytest

from mqttish.errors import RemoteProtocolError
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import MQTT_3_1_1, MQTT_5, Connect, Publish
from mqttish.protocol.reason_codes import ReasonCode
from tests.unit.packet_table import TABLE

IDS = [f"v{version}-{type(packet).__name__}-{i}" for i, (version, _, packet) in enumerate(TABLE)]


def decode_all(data: bytes, version: int, chunk: int | None = None) -> list[object]:
    decoder = PacketDecoder(version=version)
    packets = []
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        decoder.feed(data[start:start + step])
        while (packet := decoder.next()) is not NEED_DATA:
            packets.append(packet)
    assert decoder.buffered == 0
    return packets


@pytest.mark.parametrize(("version", "raw", "packet"), TABLE, ids=IDS)
def test_encode_matches_table(version: int, raw: bytes, packet: object) -> None:
    assert encode(packet, version) == raw  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "raw", "packet"), TABLE, ids=IDS)
def test_decode_matches_table(version: int, raw: bytes, packet: object) -> None:
    assert decode_all(raw, version) == [packet]


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_bytes_one_at_a_time_or_all_at_once_give_the_same_packets(version: int) -> None:
    rows = [(raw, packet) for v, raw, packet in TABLE
            if v == version and not isinstance(packet, Connect)]
    stream = b"".join(raw for raw, _ in rows)
    expected = [packet for _, packet in rows]
    assert decode_all(stream, version) == expected
    assert decode_all(stream, version, chunk=1) == expected
    assert decode_all(stream, version, chunk=7) == expected


def test_decoder_learns_the_version_from_connect() -> None:
    decoder = PacketDecoder()
    decoder.feed(encode(Connect("c", MQTT_5), MQTT_5) + b"\xe0\x01\x04")
    assert isinstance(decoder.next(), Connect)
    assert decoder.version == MQTT_5
    assert decoder.next().reason_code == 4  # type: ignore[union-attr]


def test_large_packet_fed_in_pieces() -> None:
    packet = Publish("big", bytes(range(256)) * 4000)
    raw = encode(packet)
    assert decode_all(raw, MQTT_3_1_1, chunk=1000) == [packet]


def test_oversize_packet_refused_from_its_fixed_header() -> None:
    decoder = PacketDecoder(max_packet_size=100)
    decoder.feed(b"\x30\xe8\x07")  # remaining length 1000, no body yet
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next()
    assert info.value.reason_code is ReasonCode.PACKET_TOO_LARGE


MALFORMED = [
    ("remaining length of five bytes", b"\x30\xff\xff\xff\xff\x01", "MQTT-1.5.5"),
    ("reserved packet type 0", b"\x00\x00", "MQTT-2.2.1"),
    ("AUTH before MQTT 5", b"\xf0\x00", "MQTT-2.2.1"),
    ("reserved flags on PUBACK", b"\x42\x02\x00\x01", "MQTT-2.2.2-2"),
    ("SUBSCRIBE without flag bit 1", b"\x80\x06\x00\x01\x00\x01a\x00", "MQTT-2.2.2-2"),
    ("QoS 3", b"\x36\x05\x00\x01t\x00\x01", "MQTT-3.3.1-4"),
    ("DUP on QoS 0", b"\x38\x03\x00\x01t", "MQTT-3.3.1-2"),
    ("wildcard in topic name", b"\x30\x05\x00\x03a/#", "MQTT-3.3.2-2"),
    ("empty topic name", b"\x30\x02\x00\x00", "MQTT-4.7.3-1"),
    ("invalid UTF-8", b"\x30\x04\x00\x02\xc3\x28", "MQTT-1.5.4-1"),
    ("U+0000 in a string", b"\x30\x04\x00\x02a\x00", "MQTT-1.5.4-2"),
    ("UTF-16 surrogate", b"\x30\x05\x00\x03\xed\xa0\x80", "MQTT-1.5.4-1"),
    ("packet id 0 on PUBLISH", b"\x32\x05\x00\x01t\x00\x00", "MQTT-2.3.1-1"),
    ("packet id 0 on PUBACK", b"\x40\x02\x00\x00", "MQTT-2.3.1-1"),
    ("empty topic filter", b"\x82\x05\x00\x01\x00\x00\x00", "MQTT-4.7.3-1"),
    ("'#' not last", b"\x82\x08\x00\x01\x00\x03#/a\x00", "MQTT-4.7.1-2"),
    ("'+' inside a level", b"\x82\x07\x00\x01\x00\x02a+\x00", "MQTT-4.7.1-3"),
    ("SUBSCRIBE with no filters", b"\x82\x02\x00\x01", "MQTT-3.8.3-3"),
    ("requested QoS 3", b"\x82\x06\x00\x01\x00\x01a\x03", "MQTT-3.8.3-4"),
    ("reserved subscription bits (3.1.1)", b"\x82\x06\x00\x01\x00\x01a\x04", "MQTT-3-8.3-4"),
    ("UNSUBSCRIBE with no filters", b"\xa2\x02\x00\x01", "MQTT-3.10.3-2"),
    ("PUBACK with trailing bytes", b"\x40\x03\x00\x01\x00", "MQTT-2.1.4"),
    ("PINGREQ with a body", b"\xc0\x01\x00", "MQTT-2.1.4"),
    ("CONNECT reserved flag", b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01c", "MQTT-3.1.2-3"),
    ("will QoS without will", b"\x10\x0d\x00\x04MQTT\x04\x0a\x00\x3c\x00\x01c", "MQTT-3.1.2-11"),
    ("will QoS 3", b"\x10\x0d\x00\x04MQTT\x04\x1e\x00\x3c\x00\x01c", "MQTT-3.1.2-14"),
    ("password without user name",
     b"\x10\x11\x00\x04MQTT\x04\x42\x00\x3c\x00\x01c\x00\x02pw", "MQTT-3.1.2-22"),
    ("unknown protocol name", b"\x10\x0d\x00\x04MQTX\x04\x02\x00\x3c\x00\x01c", "MQTT-3.1.2-1"),
]


@pytest.mark.parametrize(("what", "raw", "rule"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_the_rule(what: str, raw: bytes, rule: str) -> None:
    with pytest.raises(RemoteProtocolError, match=rule):
        decode_all(raw, MQTT_3_1_1)


def test_unsupported_protocol_level_asks_for_connack_code() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_all(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01c", MQTT_3_1_1)
    assert info.value.reason_code is ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


MALFORMED_V5 = [
    ("unknown property", b"\x30\x07\x00\x01t\x02\x7f\x00z", "MQTT-2.2.2"),
    ("property not allowed in PUBLISH", b"\x30\x09\x00\x01t\x05\x11\x00\x00\x00\x01",
     "not allowed in PUBLISH"),
    ("duplicate property", b"\x30\x08\x00\x01t\x04\x01\x01\x01\x01", "appears twice"),
    ("topic alias 0", b"\x30\x07\x00\x01t\x03\x23\x00\x00", "must not be 0"),
    ("payload format 2", b"\x30\x06\x00\x01t\x02\x01\x02", "must be 0 or 1"),
    ("property length past the end", b"\x30\x05\x00\x01t\x09\x01", "MQTT-2.2.2"),
    ("retain handling 3", b"\x82\x07\x00\x01\x00\x00\x01a\x30", "retain handling"),
    ("reserved option bits", b"\x82\x07\x00\x01\x00\x00\x01a\x40", "MQTT-3.8.3-5"),
    ("undefined DISCONNECT reason code", b"\xe0\x01\x05", "MQTT-3.14.2-1"),
    ("PUBACK with a DISCONNECT reason code", b"\x40\x03\x00\x01\x8e", "MQTT-3.4.2-1"),
    ("PUBREL with reason code 0x10", b"\x62\x03\x00\x01\x10", "MQTT-3.6.2-1"),
    ("SUBACK with reason code 0x03", b"\x90\x04\x00\x01\x00\x03", "MQTT-3.9.3-2"),
    ("UNSUBACK with reason code 0x01", b"\xb0\x04\x00\x01\x00\x01", "MQTT-3.11.3-2"),
    ("AUTH with reason code 0x01", b"\xf0\x01\x01", "MQTT-3.15.2-1"),
    ("CONNACK with reason code 0x8E", b"\x20\x03\x00\x8e\x00", "MQTT-3.2.2-8"),
]


@pytest.mark.parametrize(("what", "raw", "rule"), MALFORMED_V5, ids=[m[0] for m in MALFORMED_V5])
def test_malformed_v5_input(what: str, raw: bytes, rule: str) -> None:
    with pytest.raises(RemoteProtocolError, match=rule):
        decode_all(raw, MQTT_5)
