"""Valid packets: the material every mutation starts from.

Three sources. The byte table of the codec tests (tests/unit/packet_table.py)
and packets drawn from the hypothesis strategies of tests/unit/strategies.py
give every packet type with every field and property; they are drawn once per
run with the run's seed, so a run is reproducible. A small vocabulary of
topics, filters and client ids (`SCENARIO`) makes the fuzzed clients'
subscriptions, publications and sessions meet, so that mutated input also
reaches routing, deliveries, acknowledgements and takeovers.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from mqttish.protocol.codec import encode
from mqttish.protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RetainHandling,
    Subscribe,
    SubscriptionRequest,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from tests.unit.packet_table import TABLE
from tests.unit.strategies import packets

VERSIONS = (MQTT_3_1, MQTT_3_1_1, MQTT_5)

TOPICS = ("a", "a/b", "a/b/c", "s/1", "deny/x", "$SYS/broker/uptime", "$SYS/x", "/", "a//b",
          "caf\u00e9/\u00fc", "$share/g/a")
FILTERS = ("#", "+", "a/#", "a/+", "+/b/#", "a/b/c", "$SYS/#", "$share/g/a/#", "$share/g/#",
           "$share/h/+/b", "deny/#", "/#", "+/+", "s/1")
CLIENT_IDS = ("c0", "c1", "c2", "c3", "", "c0", "c1")


@dataclass(frozen=True)
class Corpus:
    """Encoded valid packets by protocol level (MQTT 3.1 borrows 3.1.1's)."""

    by_version: dict[int, tuple[bytes, ...]]

    def pick(self, rng: random.Random, version: int) -> bytes:
        return rng.choice(self.by_version[version])


def draw(strategy: st.SearchStrategy[Packet], count: int, seed: int) -> list[Packet]:
    """`count` examples of a strategy, the same ones for the same seed."""
    found: list[Packet] = []

    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(packet: Packet) -> None:
        found.append(packet)

    collect()
    return found


@functools.cache  # drawing takes seconds; both phases (and tests) share one per seed
def build_corpus(seed: int, per_version: int = 150) -> Corpus:
    by_version: dict[int, list[bytes]] = {version: [] for version in VERSIONS}
    for version, data, _ in TABLE:
        by_version[version].append(data)
        if version == MQTT_3_1_1:
            by_version[MQTT_3_1].append(data)
    for version in (MQTT_3_1_1, MQTT_5):
        for packet in draw(packets(version), per_version, seed + version):
            data = encode(packet, version)
            by_version[version].append(data)
            if version == MQTT_3_1_1:
                by_version[MQTT_3_1].append(data)
    return Corpus({version: tuple(items) for version, items in by_version.items()})


# ----------------------------------------------------------------------------- scenario


def _props(rng: random.Random, version: int, **choices: object) -> Properties:
    """Some of the given properties, for MQTT 5 only."""
    if version != MQTT_5:
        return NO_PROPERTIES
    chosen = {name: value for name, value in choices.items() if rng.random() < 0.3}
    return Properties(**chosen) if chosen else NO_PROPERTIES  # type: ignore[arg-type]


def connect(rng: random.Random, version: int, client_id: str) -> Connect:
    will = None
    if rng.random() < 0.3:
        will = Will(rng.choice(TOPICS), b"gone", rng.randint(0, 2), rng.random() < 0.3,
                    _props(rng, version, will_delay_interval=rng.choice((0, 1, 5)),
                           message_expiry_interval=rng.choice((1, 60)),
                           payload_format_indicator=1))
    username = rng.choice((None, None, "user"))
    password = b"pw" if username and rng.random() < 0.5 else None
    return Connect(
        client_id, version, rng.random() < 0.6, rng.choice((0, 0, 1, 5, 60, 65535)), will,
        username, password,
        _props(rng, version, session_expiry_interval=rng.choice((0, 1, 10, 0xFFFFFFFF)),
               receive_maximum=rng.choice((1, 2, 10, 65535)),
               maximum_packet_size=rng.choice((20, 60, 200, 100_000)),
               topic_alias_maximum=rng.choice((1, 2, 10)),
               request_problem_information=rng.randint(0, 1),
               request_response_information=rng.randint(0, 1),
               user_properties=(("k", "v"),)),
    )


class Scenario:
    """Plausible client traffic on the shared vocabulary, with the packet ids it owes."""

    def __init__(self, rng: random.Random, version: int) -> None:
        self.rng = rng
        self.version = version
        self._next_id = rng.choice((1, 1, 0xFFFE))
        self.unreleased: list[int] = []  # QoS 2 PUBLISHes sent, PUBREL not yet

    def packet_id(self) -> int:
        packet_id = self._next_id
        self._next_id = packet_id % 0xFFFF + 1
        if self.rng.random() < 0.05:
            return self.rng.choice((1, 2, 0xFFFF))  # reuse one, maybe in flight
        return packet_id

    def packet(self) -> Packet:
        return self.rng.choice(self._makers)(self)

    def _publish(self) -> Packet:
        rng = self.rng
        qos = rng.randint(0, 2)
        packet_id = self.packet_id() if qos else None
        if qos == 2 and packet_id is not None:
            self.unreleased.append(packet_id)
        topic = rng.choice(TOPICS)
        alias = rng.choice((1, 2, 11))
        props = _props(rng, self.version, topic_alias=alias, message_expiry_interval=1,
                       payload_format_indicator=1, response_topic="r/t",
                       correlation_data=b"c", content_type="text/plain",
                       user_properties=(("k", "v"), ("k", "w")))
        if props.topic_alias is not None and rng.random() < 0.5:
            topic = ""  # use an alias set (or not) before
        payload = rng.choice((b"", b"x", b"\xff\xfe", b"caf\xc3\xa9", bytes(rng.randint(0, 300))))
        return Publish(topic, payload, qos, rng.random() < 0.2, qos > 0 and rng.random() < 0.1,
                       packet_id, props)

    def _subscribe(self) -> Packet:
        rng = self.rng
        v5 = self.version == MQTT_5
        requests = tuple(
            SubscriptionRequest(
                rng.choice(FILTERS), rng.randint(0, 2),
                v5 and rng.random() < 0.2, v5 and rng.random() < 0.3,
                rng.choice(list(RetainHandling)) if v5 else RetainHandling.SEND_ON_SUBSCRIBE)
            for _ in range(rng.randint(1, 3)))
        if v5:
            requests = tuple(r for r in requests
                             if not (r.no_local and r.topic_filter.startswith("$share/"))
                             ) or requests[:1]
        props = _props(rng, self.version, subscription_identifiers=(rng.randint(1, 5),))
        return Subscribe(self.packet_id(), requests, props)

    def _unsubscribe(self) -> Packet:
        filters = tuple(self.rng.sample(FILTERS, self.rng.randint(1, 2)))
        return Unsubscribe(self.packet_id(), filters)

    def _pubrel(self) -> Packet:
        if self.unreleased and self.rng.random() < 0.8:
            return PubRel(self.unreleased.pop(0))
        return PubRel(self.packet_id())

    def _ack(self) -> Packet:
        kind = self.rng.choice((PubAck, PubRec, PubComp))
        return kind(self.packet_id())

    def _ping(self) -> Packet:
        return PingReq()

    def disconnect(self) -> Packet:
        if self.version != MQTT_5:
            return Disconnect()
        code = self.rng.choice((0, 0, 4, 0x80))
        return Disconnect(code, _props(self.rng, self.version,
                                       session_expiry_interval=self.rng.choice((0, 5))))

    _makers: tuple[Callable[[Scenario], Packet], ...] = (
        _publish, _publish, _publish, _publish, _subscribe, _subscribe, _unsubscribe, _pubrel,
        _pubrel, _ack, _ping,
    )
