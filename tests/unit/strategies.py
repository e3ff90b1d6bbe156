"""Hypothesis strategies for valid packets of each protocol version."""

from typing import Any

from hypothesis import strategies as st

from mqttish.protocol import properties as P
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RetainHandling,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, SPECS, Properties, PropType
from mqttish.protocol.reason_codes import ALLOWED_REASON_CODES

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
level = text.filter(lambda s: "/" not in s and "+" not in s and "#" not in s)
topic_names = st.lists(level, min_size=1, max_size=5).map("/".join).filter(bool)
topic_filters = st.lists(level | st.just("+"), min_size=1, max_size=5).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"])])
).filter(bool)
packet_ids = st.integers(1, 0xFFFF)
payloads = st.binary(max_size=300)
qos = st.integers(0, 2)


def codes_of(kind: str) -> st.SearchStrategy[int]:
    """The reason codes packets of `kind` may carry (others are a protocol error)."""
    return st.sampled_from(sorted(ALLOWED_REASON_CODES[kind]))


def _value(kind: PropType) -> st.SearchStrategy[Any]:
    return {
        PropType.BYTE: st.integers(0, 1),
        PropType.TWO_BYTE: st.integers(1, 0xFFFF),
        PropType.FOUR_BYTE: st.integers(1, 0xFFFFFFFF),
        PropType.VARINT: st.integers(1, 268_435_455),
        PropType.STRING: text,
        PropType.BINARY: st.binary(max_size=20),
        PropType.STRING_PAIR: st.tuples(text, text),
    }[kind]


def properties(packet: str) -> st.SearchStrategy[Properties]:
    specs = [spec for spec in SPECS if packet in spec.packets]
    fields = {
        spec.name: (st.lists(_value(spec.type), max_size=3).map(tuple) if spec.repeatable
                    else st.none() | _value(spec.type))
        for spec in specs
    }
    return st.fixed_dictionaries({}, optional=fields).map(
        lambda values: Properties(**values) if values else NO_PROPERTIES
    )


def packets(version: int) -> st.SearchStrategy[Packet]:
    v5 = version == MQTT_5

    def props(kind: str) -> st.SearchStrategy[Properties]:
        return properties(kind) if v5 else st.just(NO_PROPERTIES)

    def code(valid: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
        return valid if v5 else st.just(0)

    wills = st.builds(Will, topic_names, payloads, qos, st.booleans(), props(P.WILL))
    subscriptions = st.builds(
        SubscriptionRequest, topic_filters, qos,
        st.booleans() if v5 else st.just(False),
        st.booleans() if v5 else st.just(False),
        st.sampled_from(RetainHandling) if v5 else st.just(RetainHandling.SEND_ON_SUBSCRIBE),
    )
    publishes = st.builds(
        lambda topic, payload, q, retain, dup, pid, properties: Publish(
            topic, payload, q, retain, dup and q > 0, pid if q else None, properties),
        topic_names, payloads, qos, st.booleans(), st.booleans(), packet_ids,
        props(P.PUBLISH).filter(lambda p: p.topic_alias is None),
    )
    connack_codes = (
        codes_of(P.CONNACK) if v5 else st.sampled_from([0, 0x84, 0x85, 0x86, 0x87, 0x88])
    )
    choices = [
        st.builds(Connect, text, st.just(version), st.booleans(), st.integers(0, 0xFFFF),
                  st.none() | wills, st.none() | text,
                  st.none() | st.binary(max_size=20), props(P.CONNECT))
        .filter(lambda c: v5 or c.password is None or c.username is not None),
        st.builds(ConnAck, st.booleans(), connack_codes, props(P.CONNACK)),
        publishes,
        st.builds(PubAck, packet_ids, code(codes_of(P.PUBACK)), props(P.PUBACK)),
        st.builds(PubRec, packet_ids, code(codes_of(P.PUBREC)), props(P.PUBREC)),
        st.builds(PubRel, packet_ids, code(codes_of(P.PUBREL)), props(P.PUBREL)),
        st.builds(PubComp, packet_ids, code(codes_of(P.PUBCOMP)), props(P.PUBCOMP)),
        st.builds(Subscribe, packet_ids, st.lists(subscriptions, min_size=1, max_size=4)
                  .map(tuple), props(P.SUBSCRIBE).filter(
                      lambda p: len(p.subscription_identifiers) <= 1)),
        st.builds(SubAck, packet_ids,
                  st.lists(codes_of(P.SUBACK) if v5 else st.sampled_from([0, 1, 2, 0x80]),
                           min_size=1, max_size=4).map(tuple), props(P.SUBACK)),
        st.builds(Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4)
                  .map(tuple), props(P.UNSUBSCRIBE)),
        st.builds(UnsubAck, packet_ids,
                  st.lists(codes_of(P.UNSUBACK), max_size=4).map(tuple) if v5 else st.just(()),
                  props(P.UNSUBACK)),
        st.just(PingReq()),
        st.just(PingResp()),
        st.builds(Disconnect, code(codes_of(P.DISCONNECT)), props(P.DISCONNECT)),
    ]
    if v5:
        choices.append(st.builds(Auth, codes_of(P.AUTH), props(P.AUTH)))
    return st.one_of(choices)


__all__ = ["MQTT_3_1_1", "MQTT_5", "packets"]
