"""Mutations of one encoded MQTT packet: blind byte damage and structure-aware lies.

Blind mutations (bit flips, truncation, inserted and deleted bytes) find what
nobody thought of; structure-aware ones reach the checks behind the framing:
a packet re-framed with a wrong remaining length, a string field replaced with
ill-formed UTF-8 or U+0000, wildcards in a PUBLISH topic, MQTT 5 properties
duplicated, unknown, misplaced or out of range, undefined reason codes. Every
mutation takes and returns bytes; each has a name, so a run can say how often
each was applied.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mqttish.protocol.packets import MQTT_5
from mqttish.protocol.properties import SPECS, PropType
from mqttish.protocol.wire import MAX_VARINT, encode_string, encode_varint

Mutation = Callable[[random.Random, bytes, int], bytes]

INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xC0, 0xFE, 0xFF)
# Ill-formed UTF-8, U+0000, odd but valid text, and topics with wildcards in the wrong place.
NASTY_STRINGS = (
    b"", b"\x00", b"a\x00b", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xc2", b"a/\xe2\x82", b"\xef\xbf\xbf", b"\xe2\x80\x8b", b"+", b"#", b"a/+", b"a/#",
    b"#/a", b"a+", b"+/#", b"$SYS/x", b"$SYS/#", b"$share/", b"$share/g", b"$share//#",
    b"$share/g/", b"$share/+/a", b"$", b"/", b"//", b"a" * 1000, b"\xf0\x9f\x98\x80",
)
WILDCARD_TOPICS = (b"+", b"#", b"a/+", b"a/#", b"+/b", b"a/#/b", b"#/", b"$share/g/#", b"+\x00")
# Reason codes MQTT 5 does not define, and some it does in the wrong packet.
ODD_REASON_CODES = (0x03, 0x05, 0x06, 0x7F, 0x81, 0x8E, 0x9C, 0xA3, 0xFE, 0xFF)
UNKNOWN_PROPERTY_IDS = (0x00, 0x04, 0x05, 0x0A, 0x10, 0x14, 0x1B, 0x2B, 0x7F, 0x80, 0xFF)


# ----------------------------------------------------------------------------- framing


def split(data: bytes) -> tuple[int, bytes] | None:
    """(first byte, body) of a well-framed packet, or None."""
    if len(data) < 2:
        return None
    length = shift = 0
    for index in range(1, min(5, len(data))):
        byte = data[index]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            body = data[index + 1:]
            return (data[0], body) if len(body) == length else None
        shift += 7
    return None


def packets_in(data: bytes) -> list[bytes]:
    """A byte stream cut where its fixed headers say packets end (any rest is one piece)."""
    pieces = []
    pos = 0
    while pos < len(data):
        length = shift = 0
        end = None
        for index in range(pos + 1, min(pos + 5, len(data))):
            byte = data[index]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                end = index + 1 + length
                break
            shift += 7
        if end is None or end > len(data):
            break
        pieces.append(data[pos:end])
        pos = end
    if pos < len(data):
        pieces.append(data[pos:])
    return pieces


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(min(len(body), MAX_VARINT)) + body


def _reframed(data: bytes, change: Callable[[int, bytes], bytes | None]) -> bytes | None:
    parts = split(data)
    if parts is None:
        return None
    first, body = parts
    new_body = change(first, body)
    return None if new_body is None else frame(first, new_body)


# ----------------------------------------------------------------------------- blind


def flip_bits(rng: random.Random, data: bytes, version: int) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        index = rng.randrange(len(out))
        out[index] ^= 1 << rng.randrange(8)
    return bytes(out)


def interesting_byte(rng: random.Random, data: bytes, version: int) -> bytes:
    out = bytearray(data)
    out[rng.randrange(len(out))] = rng.choice(INTERESTING_BYTES)
    return bytes(out)


def insert_bytes(rng: random.Random, data: bytes, version: int) -> bytes:
    at = rng.randint(0, len(data))
    return data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]


def delete_bytes(rng: random.Random, data: bytes, version: int) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 8):]


def truncate(rng: random.Random, data: bytes, version: int) -> bytes:
    """Cut the packet short: what follows it is read as the rest of its body."""
    return data[:rng.randrange(len(data))]


def duplicate(rng: random.Random, data: bytes, version: int) -> bytes:
    return data * rng.randint(2, 3)


def garbage(rng: random.Random, data: bytes, version: int) -> bytes:
    return rng.randbytes(rng.randint(1, 64))


# ----------------------------------------------------------------------------- framing lies


def bogus_length(rng: random.Random, data: bytes, version: int) -> bytes:
    parts = split(data)
    body = parts[1] if parts else data[2:]
    first = data[0]
    choice = rng.randrange(6)
    if choice == 0:  # non-minimal encoding of the right length
        header = bytes(((len(body) & 0x7F) | 0x80, 0x80, 0x00))
    elif choice == 1:  # five bytes
        header = b"\xff\xff\xff\xff\x7f"
    elif choice == 2:  # the largest length there is
        header = b"\xff\xff\xff\x7f"
    elif choice == 3:  # off by a little
        header = encode_varint(max(0, len(body) + rng.choice((-2, -1, 1, 2))))
    elif choice == 4:
        header = encode_varint(rng.randint(0, MAX_VARINT))
    else:  # unterminated
        header = b"\x80" * rng.randint(1, 3)
    return bytes((first,)) + header + body


def truncate_body(rng: random.Random, data: bytes, version: int) -> bytes:
    """Shorter, but framed to its new length: a field ends too soon."""
    out = _reframed(data, lambda first, body: body[:rng.randrange(len(body))] if body else None)
    return out if out is not None else truncate(rng, data, version)


def extend_body(rng: random.Random, data: bytes, version: int) -> bytes:
    out = _reframed(data, lambda first, body: body + rng.randbytes(rng.randint(1, 16)))
    return out if out is not None else insert_bytes(rng, data, version)


def packet_type(rng: random.Random, data: bytes, version: int) -> bytes:
    return bytes((rng.randrange(16) << 4 | data[0] & 0x0F,)) + data[1:]


def header_flags(rng: random.Random, data: bytes, version: int) -> bytes:
    return bytes((data[0] & 0xF0 | rng.randrange(16),)) + data[1:]


# ----------------------------------------------------------------------------- fields


def _string_fields(body: bytes) -> list[tuple[int, int]]:
    """(start, stop) of spans that look like length-prefixed UTF-8 strings."""
    found = []
    for index in range(len(body) - 1):
        length = body[index] << 8 | body[index + 1]
        stop = index + 2 + length
        if length > 0 and stop <= len(body):
            try:
                body[index + 2:stop].decode()
            except UnicodeDecodeError:
                continue
            found.append((index, stop))
    return found


def nasty_string(rng: random.Random, data: bytes, version: int) -> bytes:
    """A string field (topic, client id, filter, user property...) made ill-formed."""

    def change(first: int, body: bytes) -> bytes | None:
        spans = _string_fields(body)
        if not spans:
            return None
        start, stop = rng.choice(spans)
        return body[:start] + encode_binary_raw(rng.choice(NASTY_STRINGS)) + body[stop:]

    out = _reframed(data, change)
    return out if out is not None else flip_bits(rng, data, version)


def encode_binary_raw(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


def wildcard_topic(rng: random.Random, data: bytes, version: int) -> bytes:
    """A PUBLISH whose topic name holds wildcards [MQTT-3.3.2-2]."""

    def change(first: int, body: bytes) -> bytes | None:
        if first >> 4 != 3 or len(body) < 2:
            return None
        stop = 2 + (body[0] << 8 | body[1])
        return encode_binary_raw(rng.choice(WILDCARD_TOPICS)) + body[stop:]

    out = _reframed(data, change)
    return out if out is not None else nasty_string(rng, data, version)


def _property_offset(first: int, body: bytes) -> int | None:
    """Where the MQTT 5 property length of a packet is, if it has one."""
    kind = first >> 4
    if kind == 1:  # CONNECT: protocol name, level, flags, keepalive
        if len(body) < 2:
            return None
        return 2 + (body[0] << 8 | body[1]) + 4
    if kind == 3:
        if len(body) < 2:
            return None
        return 2 + (body[0] << 8 | body[1]) + (2 if first & 0x06 else 0)
    if kind in (4, 5, 6, 7):
        return 3
    if kind in (8, 9, 10, 11):
        return 2
    if kind in (14, 15):
        return 1
    return None


def _property_value(rng: random.Random, kind: PropType) -> bytes:
    """A value of the property's wire type: often legal, sometimes at or past a limit."""
    if kind is PropType.BYTE:
        return bytes((rng.choice((0, 1, 1, 2, 0xFF)),))
    if kind is PropType.TWO_BYTE:
        return rng.choice((0, 1, 2, 10, 0xFFFF)).to_bytes(2, "big")
    if kind is PropType.FOUR_BYTE:
        return rng.choice((0, 1, 60, 0xFFFFFFFF)).to_bytes(4, "big")
    if kind is PropType.VARINT:
        return encode_varint(rng.choice((0, 1, 5, 127, 128, MAX_VARINT)))
    if kind is PropType.STRING_PAIR:
        return encode_string("k") + encode_binary_raw(rng.choice(NASTY_STRINGS))
    if rng.random() < 0.5:
        return encode_binary_raw(rng.choice(NASTY_STRINGS))
    return encode_string(rng.choice(("a/b", "text/plain", "SCRAM")))


def _raw_property(rng: random.Random) -> bytes:
    choice = rng.randrange(10)
    if choice == 0:
        return encode_varint(rng.choice(UNKNOWN_PROPERTY_IDS)) + rng.randbytes(2)
    spec = rng.choice(SPECS)
    value = _property_value(rng, spec.type)
    if choice == 1:
        value = value[:rng.randrange(len(value))]  # truncated
    prop = bytes((spec.identifier,)) + value
    return prop * 2 if choice in (2, 3, 4) else prop  # duplicated


def odd_property(rng: random.Random, data: bytes, version: int) -> bytes:
    """MQTT 5: insert properties that are duplicated, unknown, misplaced or out of range."""
    if version != MQTT_5:
        return nasty_string(rng, data, version)

    def change(first: int, body: bytes) -> bytes | None:
        offset = _property_offset(first, body)
        if offset is None or offset >= len(body):
            return None
        length = old = 0
        for index in range(4):  # the property length varint
            if offset + index >= len(body):
                return None
            byte = body[offset + index]
            length |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                old = index + 1
                break
        else:
            return None
        added = b"".join(_raw_property(rng) for _ in range(rng.randint(1, 3)))
        new_length = length + len(added)
        if rng.random() < 0.15:
            new_length += rng.choice((-1, 1, 1000))  # and lie about the section's length
        start = offset + old
        return (body[:offset] + encode_varint(max(0, new_length)) + added + body[start:])

    out = _reframed(data, change)
    return out if out is not None else nasty_string(rng, data, version)


def reason_code(rng: random.Random, data: bytes, version: int) -> bytes:
    """A reason code MQTT 5 does not define, on an acknowledgement, DISCONNECT or AUTH."""

    def change(first: int, body: bytes) -> bytes | None:
        kind = first >> 4
        code = bytes((rng.choice(ODD_REASON_CODES) if rng.random() < 0.7 else rng.randrange(256),))
        if kind in (4, 5, 6, 7) and len(body) >= 2:
            return body[:2] + code + body[3:]
        if kind in (14, 15):
            return code + body[1:]
        return None

    out = _reframed(data, change)
    return out if out is not None else flip_bits(rng, data, version)


MUTATIONS: tuple[Mutation, ...] = (
    flip_bits, flip_bits, interesting_byte, insert_bytes, delete_bytes, truncate, duplicate,
    garbage, bogus_length, truncate_body, extend_body, packet_type, header_flags,
    nasty_string, nasty_string, wildcard_topic, odd_property, odd_property, reason_code,
)


def mutate(rng: random.Random, data: bytes, version: int) -> tuple[str, bytes]:
    """One mutation of a non-empty packet, and its name."""
    mutation = rng.choice(MUTATIONS)
    return mutation.__name__, mutation(rng, data, version)
