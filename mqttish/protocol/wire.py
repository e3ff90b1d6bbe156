"""Primitive data representations of MQTT (section 1.5): integers, varints, strings.

Decoders take `(data, pos, end)` and return `(value, new_pos)`, so a packet is
parsed in place without slicing its body.
"""

from mqttish.errors import LocalProtocolError, malformed

MAX_VARINT = 268_435_455


def encode_varint(value: int) -> bytes:
    if value < 128:
        return bytes((value,))
    if not 0 <= value <= MAX_VARINT:
        raise LocalProtocolError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(4):
        if pos >= end:
            raise malformed("[MQTT-1.5.5] truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise malformed("[MQTT-1.5.5] variable byte integer longer than 4 bytes")


def decode_uint16(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise malformed("[MQTT-1.5.2] truncated two byte integer")
    return (data[pos] << 8) | data[pos + 1], pos + 2


def encode_binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise LocalProtocolError("binary data longer than 65535 bytes")
    return len(value).to_bytes(2, "big") + value


def encode_string(value: str) -> bytes:
    return encode_binary(value.encode())


def decode_binary(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    length, pos = decode_uint16(data, pos, end)
    stop = pos + length
    if stop > end:
        raise malformed("[MQTT-1.5.6] binary data overruns the packet")
    return bytes(data[pos:stop]), stop


def decode_string(data: bytes, pos: int, end: int) -> tuple[str, int]:
    length, pos = decode_uint16(data, pos, end)
    stop = pos + length
    if stop > end:
        raise malformed("[MQTT-1.5.4] string overruns the packet")
    return check_string(data[pos:stop]), stop


def check_string(raw: bytes) -> str:
    """Decode a UTF-8 string, refusing ill-formed UTF-8 and U+0000."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise malformed("[MQTT-1.5.4-1] string is not well-formed UTF-8") from None
    if "\x00" in text:
        raise malformed("[MQTT-1.5.4-2] string contains U+0000")
    return text
