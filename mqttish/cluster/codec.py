"""The bytes a cluster keeps in Redis and passes between nodes: no I/O here.

Forwarded messages travel as the MQTT PUBLISH packets they already are
(a 3.1.1 QoS 0 message as the very bytes it arrived as, which a 3.1.1
subscriber on the receiving node is sent unchanged), each behind a small
header: how long it has left to live, and the shared group it was given to,
if any. A batch is such records one after the other. Who published it is
left out: No Local compares it with the receiving session's client id, and a
client id is connected on one node only, the publisher's.

Store records (messages, wills, subscriptions, deliveries) are packed with
`struct` and MQTT's own property codec. Times in them are wall-clock
(`time.time`), as in every store (persistence/clock.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from mqttish.core.message import Message
from mqttish.core.store import MessageSaved, StoredMessage
from mqttish.errors import LocalProtocolError, RemoteProtocolError
from mqttish.protocol import properties as P
from mqttish.protocol.bounded_cache import BoundedCache
from mqttish.protocol.codec import decode_publish_frame
from mqttish.protocol.packets import MQTT_3_1_1, MQTT_5, RetainHandling, SubscriptionRequest, Will
from mqttish.protocol.properties import NO_PROPERTIES, decode_properties, encode_properties
from mqttish.protocol.wire import (
    check_string,
    decode_binary,
    decode_string,
    decode_varint,
    encode_binary,
    encode_string,
)

_V5, _DUP, _EXPIRY, _SHARED, _RELAYED = 1, 2, 4, 16, 32
_DOUBLE = struct.Struct(">d")
_HEAD = struct.Struct(">BBB")  # qos, retain, flags
STRING_CACHE_BYTES = 2 * 1024 * 1024
MAX_CACHED_STRING = 2048


class CodecError(ValueError):
    """Bytes from Redis that this version cannot read (another version wrote them?)."""


# ------------------------------------------------------------------ forwarded messages


class Forwarded(NamedTuple):
    """A message from another node: for the sessions here, or for one shared group."""

    message: Message
    share_name: str | None  # `$share/<group>/<filter>` whose members here get it
    dup: bool  # a shared group's member may have had it before
    relayed: bool  # a node with no member free passed it on: it goes no further


# Strings that recur in batches (client ids, topics, group names), encoded and decoded
# once: bounded by bytes, and a string is kept only once it is seen a second time.
_encoded: BoundedCache[str, bytes] = BoundedCache(STRING_CACHE_BYTES, MAX_CACHED_STRING)
_decoded: BoundedCache[bytes, str] = BoundedCache(STRING_CACHE_BYTES, MAX_CACHED_STRING)


def _encode(text: str) -> bytes:
    encoded = _encoded.get(text)
    if encoded is None:
        encoded = encode_string(text)
        _encoded.put(text, encoded, 2 * len(encoded))
    return encoded


def _decode(data: bytes, pos: int) -> tuple[str, int]:
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > len(data):
        raise CodecError("a string overruns its batch")
    raw = data[pos + 2:stop]
    text = _decoded.get(raw)
    if text is None:
        text = check_string(raw)
        _decoded.put(raw, text, 2 * len(raw))
    return text, stop


def encode_forwarded(message: Message, now: float, share_name: str | None = None,
                     dup: bool = False, relayed: bool = False) -> bytes:
    """One message as a record of a batch."""
    flags = _RELAYED if relayed else 0
    parts = [b""]
    if dup:
        flags |= _DUP
    if message.expires_at is not None:
        flags |= _EXPIRY
        parts.append(_DOUBLE.pack(message.expires_at - now))
    if share_name is not None:
        flags |= _SHARED
        parts.append(_encode(share_name))
    qos = message.qos
    if qos == 0 and message.properties is NO_PROPERTIES and not message.retain:
        parts.append(message.frame(MQTT_3_1_1, 0, False)[0])  # what a 3.1.1 client is sent
    else:
        flags |= _V5
        head, tail = message.frame(MQTT_5, qos, message.retain)
        parts += (head, b"\x00\x01", tail) if qos else (head,)
    parts[0] = bytes((flags,))
    return b"".join(parts)


def decode_batch(data: bytes, now: float) -> Iterator[Forwarded]:
    """The messages of a batch, in order; `now` is the receiving broker's clock."""
    pos = 0
    end = len(data)
    try:
        while pos < end:
            flags = data[pos]
            pos += 1
            share_name = None
            expires_at = None
            if flags & _EXPIRY:
                expires_at = now + _DOUBLE.unpack_from(data, pos)[0]
                pos += 8
            if flags & _SHARED:
                share_name, pos = _decode(data, pos)
            start = pos
            if flags & _V5:
                packet, pos = decode_publish_frame(data, pos, MQTT_5)
                message = Message(packet.topic, packet.payload, packet.qos, packet.retain,
                                  packet.properties, expires_at)
            else:  # a plain QoS 0 packet, the common case: read in place
                length, body = decode_varint(data, pos + 1, end)
                pos = body + length
                topic, payload_at = _decode(data, body)
                if data[start] != 0x30 or pos > end or payload_at > pos:
                    raise CodecError("not a plain QoS 0 PUBLISH")
                message = Message(topic, data[payload_at:pos], 0, False, NO_PROPERTIES,
                                  expires_at)
                message.arrived_as(data[start:pos])
            yield Forwarded(message, share_name, bool(flags & _DUP), bool(flags & _RELAYED))
    except (RemoteProtocolError, struct.error, IndexError) as exc:
        raise CodecError(f"unreadable forwarded batch: {exc}") from None


# ------------------------------------------------------------------ store records


def encode_message(record: MessageSaved, expires_at: float | None) -> bytes:
    """A stored message; `expires_at` is wall-clock (None: never)."""
    flags = 0 if expires_at is None else 1
    return b"".join((
        _HEAD.pack(record.qos, record.retain, flags),
        _DOUBLE.pack(expires_at or 0.0),
        encode_string(record.topic),
        encode_properties(record.properties, P.PUBLISH),
        record.payload,
    ))


def decode_message(message_id: int, data: bytes, wall_now: float) -> StoredMessage:
    """A stored message, its expiry as seconds left at `wall_now`."""
    try:
        qos, retain, flags = _HEAD.unpack_from(data, 0)
        (expires_at,) = _DOUBLE.unpack_from(data, 3)
        topic, pos = decode_string(data, 11, len(data))
        props, pos = decode_properties(data, pos, len(data), P.PUBLISH)
    except (RemoteProtocolError, LocalProtocolError, struct.error) as exc:
        raise CodecError(f"unreadable stored message {message_id}: {exc}") from None
    return StoredMessage(message_id, topic, data[pos:], qos, bool(retain), props,
                         expires_at - wall_now if flags & 1 else None)


def encode_will(will: Will) -> bytes:
    return b"".join((_HEAD.pack(will.qos, will.retain, 0), encode_string(will.topic),
                     encode_properties(will.properties, P.WILL), will.payload))


def decode_will(data: bytes) -> Will:
    try:
        qos, retain, _ = _HEAD.unpack_from(data, 0)
        topic, pos = decode_string(data, 3, len(data))
        props, pos = decode_properties(data, pos, len(data), P.WILL)
    except (RemoteProtocolError, LocalProtocolError, struct.error) as exc:
        raise CodecError(f"unreadable will: {exc}") from None
    return Will(topic, data[pos:], qos, bool(retain), props)


_SUBSCRIPTION = struct.Struct(">BBBBI")  # qos, no local, retain as published, handling, id


def encode_subscription(request: SubscriptionRequest, identifier: int | None) -> bytes:
    return _SUBSCRIPTION.pack(request.qos, request.no_local, request.retain_as_published,
                              int(request.retain_handling), identifier or 0)


def decode_subscription(topic_filter: str, data: bytes
                        ) -> tuple[SubscriptionRequest, int | None]:
    try:
        qos, no_local, as_published, handling, identifier = _SUBSCRIPTION.unpack(data)
        request = SubscriptionRequest(topic_filter, qos, bool(no_local), bool(as_published),
                                      RetainHandling(handling))
    except (struct.error, ValueError) as exc:
        raise CodecError(f"unreadable subscription {topic_filter!r}: {exc}") from None
    return request, identifier or None


def encode_delivery(qos: int, retain: bool, subscription_ids: tuple[int, ...]) -> bytes:
    return struct.pack(f">BB{len(subscription_ids)}I", qos, retain, *subscription_ids)


def decode_delivery(data: bytes) -> tuple[int, bool, tuple[int, ...]]:
    count = (len(data) - 2) // 4
    try:
        qos, retain, *ids = struct.unpack(f">BB{count}I", data)
    except struct.error as exc:
        raise CodecError(f"unreadable delivery: {exc}") from None
    return qos, bool(retain), tuple(ids)


# ------------------------------------------------------------------ broadcasts


@dataclass(frozen=True, slots=True)
class Broadcast:
    """What one commit of a node changed that every node keeps a copy of: its entries in
    the route table, and retained messages. `sequence` numbers a node's broadcasts, so a
    node that missed one (Redis pub/sub delivers at most once) knows to reload."""

    member: str
    sequence: int
    added: tuple[str, ...] = ()  # filters (or $share/<group>/<filter>) now routed to it
    removed: tuple[str, ...] = ()
    retained: tuple[tuple[int, bytes], ...] = ()  # (message id, encode_message) set
    cleared: tuple[str, ...] = ()  # retained topics cleared


def encode_broadcast(broadcast: Broadcast) -> bytes:
    parts = [encode_string(broadcast.member), struct.pack(">QIIII", broadcast.sequence,
                                                          len(broadcast.added),
                                                          len(broadcast.removed),
                                                          len(broadcast.retained),
                                                          len(broadcast.cleared))]
    parts += map(encode_string, broadcast.added)
    parts += map(encode_string, broadcast.removed)
    for message_id, blob in broadcast.retained:
        parts += (struct.pack(">QI", message_id, len(blob)), blob)
    parts += map(encode_string, broadcast.cleared)
    return b"".join(parts)


def decode_broadcast(data: bytes) -> Broadcast:
    try:
        end = len(data)
        member, pos = decode_string(data, 0, end)
        sequence, added, removed, retained, cleared = struct.unpack_from(">QIIII", data, pos)
        pos += 24
        strings: list[list[str]] = []
        for count in (added, removed):
            items = []
            for _ in range(count):
                item, pos = decode_string(data, pos, end)
                items.append(item)
            strings.append(items)
        messages = []
        for _ in range(retained):
            message_id, size = struct.unpack_from(">QI", data, pos)
            pos += 12
            messages.append((message_id, data[pos:pos + size]))
            pos += size
        topics = []
        for _ in range(cleared):
            topic, pos = decode_string(data, pos, end)
            topics.append(topic)
    except (RemoteProtocolError, struct.error) as exc:
        raise CodecError(f"unreadable broadcast: {exc}") from None
    return Broadcast(member, sequence, tuple(strings[0]), tuple(strings[1]), tuple(messages),
                     tuple(topics))


def encode_text(*fields: str) -> bytes:
    """A control message: a few strings."""
    return b"".join(encode_binary(field.encode()) for field in fields)


def decode_text(data: bytes) -> list[str]:
    fields = []
    pos = 0
    try:
        while pos < len(data):
            raw, pos = decode_binary(data, pos, len(data))
            fields.append(raw.decode())
    except (RemoteProtocolError, UnicodeDecodeError) as exc:
        raise CodecError(f"unreadable control message: {exc}") from None
    return fields
