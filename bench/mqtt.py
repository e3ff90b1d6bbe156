"""Just enough MQTT 3.1.1 for a load generator: encoders and a packet splitter.

Every broker under test speaks 3.1.1 (amqtt speaks nothing newer), so the
generator does too. Encoders return finished `bytes` so scenarios can build
their packets once and write them in large batches; `PacketSplitter` is the
bytes-in, packets-out reader used on the slow paths (CONNACK, SUBACK). The
hot path (PUBLISH to a subscriber) has its own inlined parser in
`bench.loadgen.Subscriber`, which reads the payload layout defined here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
DISCONNECT = b"\xe0\x00"

PAYLOAD_SIZE = 64
# Every benchmark payload starts with: send time (time.monotonic_ns, shared by
# all processes of the machine), publisher number, sequence number; then padding.
STAMP = struct.Struct(">QIQ")
PADDING = b"\x00" * (PAYLOAD_SIZE - STAMP.size)


def varint(value: int) -> bytes:
    """MQTT's Variable Byte Integer (remaining length)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect(client_id: str, keepalive: int = 300, clean: bool = True,
            username: str | None = None, password: str | None = None) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (
        0x40 if password is not None else 0)
    body = _string("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return bytes([CONNECT]) + varint(len(body)) + body


def subscribe(packet_id: int, topic_filter: str, qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + _string(topic_filter) + bytes([qos])
    return bytes([SUBSCRIBE]) + varint(len(body)) + body


def publish_head(topic: str, qos: int = 0, retain: bool = False,
                 payload_size: int = PAYLOAD_SIZE) -> bytes:
    """Fixed header and topic of a PUBLISH; the packet id (QoS > 0) and payload follow."""
    flags = (qos << 1) | int(retain)
    length = 2 + len(topic.encode()) + (2 if qos else 0) + payload_size
    return bytes([PUBLISH | flags]) + varint(length) + _string(topic)


def payload(publisher: int, seq: int, sent_ns: int) -> bytes:
    return STAMP.pack(sent_ns, publisher, seq) + PADDING


def publish(topic: str, data: bytes, qos: int = 0, retain: bool = False,
            packet_id: int = 0) -> bytes:
    head = publish_head(topic, qos, retain, len(data))
    return head + (packet_id.to_bytes(2, "big") if qos else b"") + data


PUBACKS: tuple[bytes, ...] = tuple(
    bytes([PUBACK, 2]) + pid.to_bytes(2, "big") for pid in range(0x10000)
)


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int  # first byte, type and flags
    body: bytes


class ProtocolError(Exception):
    """The broker sent something a 3.1.1 broker should not have."""


class PacketSplitter:
    """Bytes in, whole packets out: `feed(data)` then iterate `packets()`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        buffer = self._buffer
        buffer += data
        packets = []
        pos = 0
        while True:
            if len(buffer) - pos < 2:
                break
            length, shift, index = 0, 0, pos + 1
            while True:
                if index >= len(buffer):
                    length = -1
                    break
                byte = buffer[index]
                length |= (byte & 0x7F) << shift
                index += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
            if length < 0 or index + length > len(buffer):
                break
            packets.append(Packet(buffer[pos], bytes(buffer[index:index + length])))
            pos = index + length
        del buffer[:pos]
        return packets
