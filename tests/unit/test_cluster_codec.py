"""The cluster's encodings (mqttish/cluster/codec.py) and its table of remote routes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttish.cluster import codec
from mqttish.cluster.routes import RouteTable
from mqttish.core.message import Message
from mqttish.core.store import MessageSaved
from mqttish.protocol import properties as P
from mqttish.protocol.codec import encode
from mqttish.protocol.packets import Publish, RetainHandling, SubscriptionRequest, Will
from mqttish.protocol.properties import Properties
from mqttish.protocol.topics import matches
from tests.unit.strategies import properties

publish_properties = properties(P.PUBLISH).filter(
    lambda p: p.topic_alias is None and not p.subscription_identifiers
    and p.message_expiry_interval is None)
topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="+#\x00"),
                 min_size=1, max_size=20)


@given(topics, st.binary(max_size=64), st.integers(0, 2), st.booleans(), publish_properties,
       st.none() | st.floats(1, 1000), st.none() | topics,  # (client ids are strings too)
       st.none() | st.sampled_from(["$share/g/a/#", "$share/h/+"]), st.booleans(),
       st.booleans())
def test_a_batch_gives_back_the_messages_it_was_made_of(
        topic: str, payload: bytes, qos: int, retain: bool, props: Properties,
        ttl: float | None, origin: str | None, share: str | None, dup: bool,
        relayed: bool) -> None:
    now = 100.0
    message = Message(topic, payload, qos, retain, props, None if ttl is None else now + ttl,
                      origin)
    batch = codec.encode_forwarded(message, now, share, dup, relayed) * 2
    later = 250.0  # the receiving node's clock reads otherwise
    got = list(codec.decode_batch(batch, later))
    assert len(got) == 2
    for forwarded in got:
        copy = forwarded.message
        assert (copy.topic, copy.payload, copy.qos, copy.retain, copy.properties) \
            == (topic, payload, qos, retain, props)
        assert copy.origin is None  # (connected to the sending node only: no No Local here)
        assert copy.expires_at == (None if ttl is None else pytest.approx(later + ttl))
        assert (forwarded.share_name, forwarded.dup, forwarded.relayed) == (share, dup, relayed)


def test_a_plain_qos0_message_travels_as_the_packet_a_311_subscriber_is_sent() -> None:
    message = Message("a/b", b"hello")
    (forwarded,) = codec.decode_batch(codec.encode_forwarded(message, 0.0), 0.0)
    assert forwarded.message.frame(4, 0, False)[0] == encode(Publish("a/b", b"hello"), 4)


def test_an_unreadable_batch_is_a_codec_error() -> None:
    with pytest.raises(codec.CodecError):
        list(codec.decode_batch(b"\x00\x99garbage", 0.0))


def test_store_records_round_trip() -> None:
    props = Properties(content_type="text/plain", user_properties=(("k", "v"),))
    saved = MessageSaved(7, "t/ü", b"\x00payload", 2, True, props, 30.0)
    stored = codec.decode_message(7, codec.encode_message(saved, 1030.0), 1000.0)
    assert (stored.topic, stored.payload, stored.qos, stored.retain, stored.properties,
            stored.expires_in) == ("t/ü", b"\x00payload", 2, True, props, 30.0)
    assert codec.decode_message(7, codec.encode_message(saved, None), 0.0).expires_in is None
    will = Will("w", b"bye", 1, True, Properties(will_delay_interval=5))
    assert codec.decode_will(codec.encode_will(will)) == will
    request = SubscriptionRequest("a/+", 1, True, True, RetainHandling.DO_NOT_SEND)
    assert codec.decode_subscription("a/+", codec.encode_subscription(request, 9)) == (
        request, 9)
    assert codec.decode_delivery(codec.encode_delivery(1, True, (3, 4))) == (1, True, (3, 4))


def test_broadcasts_and_control_messages_round_trip() -> None:
    broadcast = codec.Broadcast("n1.ab", 42, ("a/#", "$share/g/b"), ("c",),
                                ((5, b"\x01blob"),), ("gone/topic",))
    assert codec.decode_broadcast(codec.encode_broadcast(broadcast)) == broadcast
    assert codec.decode_text(codec.encode_text("Q", "client ü", "n2.cd")) == [
        "Q", "client ü", "n2.cd"]


# ------------------------------------------------------------------ the route table

filters = st.sampled_from(["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "a/b/c", "+"])
names = st.sampled_from(["a/b", "a", "a/b/c", "x/b", "$SYS/x", "a/c"])


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["n1", "n2", "n3"]), filters),
                max_size=30), names)
def test_the_route_table_matches_like_the_reference_matcher(
        steps: list[tuple[bool, str, str]], topic: str) -> None:
    table = RouteTable()
    model: set[tuple[str, str]] = set()
    for add, member, topic_filter in steps:
        table.match(topic)  # (fills the cache, which changes must clear)
        if add:
            table.add(member, topic_filter)
            model.add((member, topic_filter))
        else:
            table.remove(member, topic_filter)
            model.discard((member, topic_filter))
    expected = sorted({member for member, f in model if matches(f, topic)})
    assert list(table.match(topic).members) == expected
    assert table.count == len(model)


def test_shared_groups_are_routed_per_group() -> None:
    table = RouteTable()
    table.add("n1", "$share/g/a/#")
    table.add("n2", "$share/g/a/#")
    table.add("n2", "$share/h/a/b")
    table.add("n3", "a/b")
    match = table.match("a/b")
    assert match.members == ("n3",)
    assert match.groups == (("$share/g/a/#", ("n1", "n2")), ("$share/h/a/b", ("n2",)))
    assert table.sharing("$share/g/a/#") == ("n1", "n2")
    table.drop("n2")
    assert table.match("a/b").groups == (("$share/g/a/#", ("n1",)),)
    assert table.sharing("$share/h/a/b") == ()
