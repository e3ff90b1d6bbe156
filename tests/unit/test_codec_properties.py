"""Property-based tests: every valid packet round-trips; no input crashes the decoder."""

import contextlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttish.errors import MQTTError
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import MQTT_3_1_1, MQTT_5, Connect, Packet, PubAck
from mqttish.protocol.reason_codes import ReasonCode
from tests.unit.packet_table import TABLE
from tests.unit.strategies import packets

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def roundtrip(packet: Packet, version: int) -> list[object]:
    decoder = PacketDecoder(version=version)
    decoder.feed(encode(packet, version))
    result = []
    while (decoded := decoder.next()) is not NEED_DATA:
        result.append(decoded)
    return result


def normalised(packet: Packet) -> Packet:
    """Connect carries the protocol name the decoder saw; compare with it filled in."""
    if isinstance(packet, Connect) and not packet.protocol_name:
        return replace(packet, protocol_name=packet.name)
    return packet


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@SETTINGS
@given(data=st.data())
def test_every_packet_round_trips(version: int, data: st.DataObject) -> None:
    packet = data.draw(packets(version))
    assert roundtrip(packet, version) == [normalised(packet)]


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@SETTINGS
@given(data=st.data())
def test_chunking_does_not_change_the_packets(version: int, data: st.DataObject) -> None:
    stream = data.draw(st.lists(packets(version).filter(lambda p: not isinstance(p, Connect)),
                                min_size=1, max_size=5))
    raw = b"".join(encode(p, version) for p in stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    decoder = PacketDecoder(version=version)
    decoded = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        decoder.feed(raw[start:end])
        while (packet := decoder.next()) is not NEED_DATA:
            decoded.append(packet)
    assert decoded == stream


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@SETTINGS
@given(data=st.data())
def test_taking_pubacks_first_gives_the_same_packets(version: int, data: st.DataObject) -> None:
    """The broker asks `take_puback` before `next`: plain PUBACKs come out as their ids,
    everything else (a PUBACK with a reason code too) exactly as `next` decodes it."""
    stream = data.draw(st.lists(
        packets(version).filter(lambda p: not isinstance(p, Connect))
        | st.builds(PubAck, st.integers(1, 0xFFFF)), min_size=1, max_size=8))
    raw = b"".join(encode(p, version) for p in stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    decoder = PacketDecoder(version=version)
    decoded: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        decoder.feed(raw[start:end])
        while True:
            if packet_id := decoder.take_puback():
                decoded.append(PubAck(packet_id))
            elif (packet := decoder.next()) is not NEED_DATA:
                decoded.append(packet)
            else:
                break
    assert decoded == stream


def test_take_puback_leaves_every_other_packet_to_next() -> None:
    decoder = PacketDecoder(version=MQTT_5)
    decoder.feed(b"\x40\x03\x00\x07\x10" + b"\x40\x02\x00\x00" + b"\x40\x02\x00")
    assert decoder.take_puback() == 0  # a reason code: a packet of its own
    assert decoder.next() == PubAck(7, ReasonCode.NO_MATCHING_SUBSCRIBERS)
    assert decoder.take_puback() == 0  # packet id 0 is malformed, which `next` says
    with pytest.raises(MQTTError):
        decoder.next()
    decoder = PacketDecoder(version=MQTT_3_1_1)
    decoder.feed(b"\x40\x02\x00")
    assert decoder.take_puback() == 0 and decoder.next() is NEED_DATA  # not all here yet
    decoder.feed(b"\x09")
    assert decoder.take_puback() == 9 and decoder.next() is NEED_DATA


def drain(raw: bytes, version: int) -> None:
    decoder = PacketDecoder(version=version, max_packet_size=4096)
    decoder.feed(raw)
    while decoder.next() is not NEED_DATA:
        pass


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@settings(max_examples=1000, deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(version: int, raw: bytes) -> None:
    with contextlib.suppress(MQTTError):
        drain(raw, version)


@settings(max_examples=1000, deadline=None)
@given(row=st.sampled_from(TABLE), data=st.data())
def test_mutated_packets_raise_only_protocol_errors(row: tuple[int, bytes, Packet],
                                                    data: st.DataObject) -> None:
    version, raw, _ = row
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(MQTTError):
        drain(bytes(mutated), version)
