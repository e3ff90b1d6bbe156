"""A misbehaving MQTT client: the byte streams both phases send.

A `FuzzClient` plays one connection: usually a CONNECT first (sometimes not,
sometimes twice), then a few reads' worth of packets at a time, mostly valid
and on the shared vocabulary of `seeds.Scenario`, some taken from the corpus,
some mutated; it acknowledges what the broker sends it, so deliveries and
QoS 2 exchanges also run. How much it mutates, how long it talks and how it
ends (DISCONNECT, a dropped socket, silence until the keepalive expires, or
staying until the end) are drawn per connection.
"""

from __future__ import annotations

import random
from collections import Counter
from enum import Enum

from mqttish.errors import MQTTError
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Disconnect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
)
from tests.fuzz.mutations import mutate
from tests.fuzz.seeds import CLIENT_IDS, Corpus, Scenario, connect


class Ending(Enum):
    DISCONNECT = "disconnect"  # a DISCONNECT packet, then the socket closes
    LOSE = "lose"  # the socket closes (or resets) without DISCONNECT
    SILENCE = "silence"  # nothing more is sent until the keepalive expires
    STAY = "stay"  # open until the run moves on


ENDINGS = (Ending.DISCONNECT, Ending.LOSE, Ending.LOSE, Ending.SILENCE, Ending.STAY)
MUTATION_RATES = (0.0, 0.02, 0.05, 0.1, 0.3, 1.0)


class FuzzClient:
    def __init__(self, rng: random.Random, corpus: Corpus, mutations: Counter[str],
                 number: int) -> None:
        self.rng = rng
        self.corpus = corpus
        self.mutations = mutations
        self.version = rng.choice((MQTT_3_1, MQTT_3_1_1, MQTT_3_1_1, MQTT_5, MQTT_5, MQTT_5))
        self.client_id = rng.choice(CLIENT_IDS) if rng.random() < 0.6 else f"u{number}"
        self.scenario = Scenario(rng, self.version)
        self.mutation_rate = rng.choice(MUTATION_RATES)
        self.steps_left = rng.randint(1, 40)
        self.ending = rng.choice(ENDINGS)
        self.replies: list[Packet] = []
        self.packets = 0  # packets sent, mutated or not
        self.started = False
        self.decoder = PacketDecoder(self.version)
        self.decodable = True

    def next_reads(self) -> list[bytes] | None:
        """The bytes of the next step, as the reads the broker sees; None when done."""
        if self.steps_left <= 0:
            return None
        self.steps_left -= 1
        items: list[Packet | bytes] = []
        rng = self.rng
        if not self.started:
            self.started = True
            if rng.random() < 0.1:  # something before CONNECT
                items.append(self._any_packet())
            items.append(connect(rng, self.version, self.client_id))
        elif rng.random() < 0.03:  # a second CONNECT
            items.append(connect(rng, self.version, self.client_id))
        for _ in range(rng.randint(1, 4)):
            items.append(self._any_packet())
        if self.steps_left == 0 and self.ending is Ending.DISCONNECT:
            items.append(self.scenario.disconnect() if rng.random() < 0.9 else Disconnect())
        data = b"".join(self._encoded(item) for item in items)
        return self._reads(data)

    def _any_packet(self) -> Packet | bytes:
        rng = self.rng
        choice = rng.random()
        if self.replies and choice < 0.5:
            return self.replies.pop(0)
        if choice < 0.95:
            return self.scenario.packet()
        return self.corpus.pick(rng, self.version)

    def _encoded(self, item: Packet | bytes) -> bytes:
        if isinstance(item, bytes):
            data = item
        else:
            try:
                data = encode(item, self.version)
            except (MQTTError, ValueError, OverflowError):
                return b""  # not expressible in this version (AUTH in 3.1.1, ...)
        self.packets += 1
        if data and self.rng.random() < self.mutation_rate:
            name, data = mutate(self.rng, data, self.version)
            self.mutations[name] += 1
        return data

    def _reads(self, data: bytes) -> list[bytes]:
        rng = self.rng
        if len(data) < 2 or rng.random() < 0.6:
            return [data]
        if len(data) < 40 and rng.random() < 0.1:
            return [data[i:i + 1] for i in range(len(data))]  # a trickle
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 3))))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    def observe(self, packets: list[Packet]) -> None:
        """Acknowledge what the broker sent, as a client would (mostly)."""
        rng = self.rng
        for packet in packets:
            if rng.random() < 0.15:
                continue  # forget to answer
            if isinstance(packet, Publish) and packet.packet_id:
                reply: Packet = (PubAck if packet.qos == 1 else PubRec)(packet.packet_id)
                self.replies.append(reply)
            elif isinstance(packet, PubRel):
                self.replies.append(PubComp(packet.packet_id))
        del self.replies[64:]

    def observe_bytes(self, data: bytes) -> None:
        """Decode what the broker sent (best effort: the broker may speak another level
        than the one this client asked for, if its CONNECT was mutated)."""
        if not self.decodable or not data:
            return
        packets = []
        try:
            self.decoder.feed(data)
            while (packet := self.decoder.next()) is not NEED_DATA:
                packets.append(packet)
        except MQTTError:
            self.decodable = False
        self.observe(packets)  # type: ignore[arg-type]


__all__ = ["ENDINGS", "Ending", "FuzzClient"]
