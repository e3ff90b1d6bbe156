"""Application messages, and the bytes they become on the wire.

A `Message` is created once per PUBLISH and shared by every delivery of it.
It caches its encoded form per (protocol version, QoS, retain flag), so
fanning one message out to a thousand subscribers encodes it once: QoS 0
deliveries share whole packets, QoS 1/2 deliveries share everything but the
two bytes of the packet identifier.
"""

from __future__ import annotations

from mqttish.protocol import properties as P
from mqttish.protocol.bounded_cache import BoundedCache
from mqttish.protocol.codec import KNOWN_TOPICS_BYTES, MAX_CACHED_TOPIC, publish_frame
from mqttish.protocol.packets import MQTT_3_1, MQTT_3_1_1, MQTT_5
from mqttish.protocol.properties import NO_PROPERTIES, Properties, encode_properties
from mqttish.protocol.wire import encode_string


class Message:
    """One published message: what every subscriber receives a copy of."""

    __slots__ = ("_frames", "expires_at", "origin", "payload", "properties", "qos", "retain",
                 "store_id", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        expires_at: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        # Properties forwarded to subscribers: never topic alias or subscription ids.
        self.properties = properties
        self.expires_at = expires_at  # absolute time on the broker's clock, from Message Expiry
        self.origin = origin  # client id of the publisher, for No Local
        self.store_id = 0  # its id in the durable store, once a durable change needs it
        self._frames: dict[int, tuple[bytes, bytes]] = {}

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.payload[:32]!r}, qos={self.qos})"

    @property
    def size(self) -> int:
        return len(self.topic) + len(self.payload)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def remaining_time(self, now: float) -> float | None:
        """Seconds until it expires (None: never)."""
        return None if self.expires_at is None else self.expires_at - now

    def remaining_expiry(self, now: float) -> int | None:
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - now + 0.999))

    def arrived_as(self, packet: bytes) -> None:
        """Reuse the bytes a 3.1.1 QoS 0 PUBLISH without retain arrived as: they are the
        packet 3.1 and 3.1.1 subscribers receive at QoS 0, so it needs no encoding."""
        self._frames[MQTT_3_1 << 3] = self._frames[MQTT_3_1_1 << 3] = (packet, b"")

    def frame(self, version: int, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """The PUBLISH packet split around its packet identifier: (head, tail).

        For QoS 0 there is no identifier: head is the whole packet, tail is empty.
        Only valid when the delivery adds no properties of its own.
        """
        key = (version << 3) | (qos << 1) | retain
        frames = self._frames
        cached = frames.get(key)
        if cached is None:
            if version == MQTT_5:
                tail = encode_properties(self.properties, P.PUBLISH) + self.payload
            else:
                tail = self.payload
            cached = frames[key] = publish_frame(_encoded_topic(self.topic), qos, retain, tail)
        return cached


# Topics repeat: encode each once. Bounded by bytes, like the decoder's cache of names.
_encoded_topics: BoundedCache[str, bytes] = BoundedCache(KNOWN_TOPICS_BYTES, MAX_CACHED_TOPIC)


def _encoded_topic(topic: str) -> bytes:
    encoded = _encoded_topics.get(topic)
    if encoded is None:
        encoded = encode_string(topic)
        _encoded_topics.put(topic, encoded, 2 * len(encoded))
    return encoded
