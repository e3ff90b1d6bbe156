"""Topic validation, the subscription tree and the retained store, checked against `matches`."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttish.config import Config
from mqttish.core.message import Message
from mqttish.core.retained import RetainedStore
from mqttish.core.session import Session
from mqttish.core.subscriptions import Subscription, SubscriptionTree
from mqttish.errors import RemoteProtocolError
from mqttish.protocol.topics import matches, parse_shared, validate_topic_filter

MATCHES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "any/thing", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("#", "$SYS/broker/uptime", False),
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_matches_spec_examples(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def make_tree(filters: list[str]) -> tuple[SubscriptionTree, dict[str, Session]]:
    tree = SubscriptionTree()
    sessions = {}
    for index, topic_filter in enumerate(filters):
        session = sessions[topic_filter] = Session(f"c{index}", Config())
        tree.add(Subscription(session, topic_filter, 1))
    return tree, sessions


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_tree_agrees_with_matches(topic_filter: str, topic: str, expected: bool) -> None:
    tree, _ = make_tree([topic_filter])
    assert bool(tree.match(topic).targets) is expected


level = st.sampled_from(["a", "b", "c", "", "$x"])
topics = st.lists(level, min_size=1, max_size=4).map("/".join)
filters = st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"]))


@settings(max_examples=300, deadline=None)
@given(subscribed=st.lists(filters, min_size=1, max_size=8, unique=True), topic=topics)
def test_tree_matches_exactly_the_matching_filters(subscribed: list[str], topic: str) -> None:
    tree, sessions = make_tree(subscribed)
    found = {target.session.client_id for target in tree.match(topic).targets}
    assert found == {sessions[f].client_id for f in subscribed if matches(f, topic)}


@settings(max_examples=300, deadline=None)
@given(stored=st.lists(topics, min_size=1, max_size=10, unique=True), topic_filter=filters)
def test_retained_store_matches_exactly_the_matching_topics(stored: list[str],
                                                            topic_filter: str) -> None:
    store = RetainedStore()
    for topic in stored:
        store.set(Message(topic, b"x", retain=True))
    found = sorted(m.topic for m in store.match(topic_filter))
    assert found == sorted(t for t in stored if matches(topic_filter, t))


def test_overlapping_subscriptions_aggregate_to_one_target() -> None:
    tree = SubscriptionTree()
    session = Session("c", Config())
    tree.add(Subscription(session, "a/#", 0, identifier=1))
    tree.add(Subscription(session, "a/+", 2, identifier=2))
    [target] = tree.match("a/b").targets
    assert target.qos == 2
    assert sorted(target.subscription_ids) == [1, 2]


def test_remove_prunes_and_clears_cache() -> None:
    tree, _ = make_tree(["a/b/c"])
    assert tree.match("a/b/c").targets
    assert tree.remove("c0", "a/b/c")
    assert not tree.match("a/b/c").targets
    assert not tree.remove("c0", "a/b/c")
    assert tree.count == 0
    assert tree._root.empty()


def test_shared_groups_are_matched_separately() -> None:
    tree = SubscriptionTree()
    one, two = Session("one", Config()), Session("two", Config())
    tree.add(Subscription(one, "$share/g/jobs/#", 1))
    tree.add(Subscription(two, "$share/g/jobs/#", 1))
    match = tree.match("jobs/1")
    assert match.targets == []
    [group] = match.groups
    assert set(group.members) == {"one", "two"}


def test_retained_replace_and_delete() -> None:
    store = RetainedStore()
    store.set(Message("a/b", b"1", retain=True))
    store.set(Message("a/b", b"2", retain=True))
    assert [m.payload for m in store.match("a/#")] == [b"2"]
    store.set(Message("a/b", b"", retain=True))
    assert list(store.match("#")) == []
    assert store.count == 0


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+a", "##"])
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(RemoteProtocolError):
        validate_topic_filter(bad)


def test_shared_filter_parsing() -> None:
    shared = parse_shared("$share/workers/orders/#")
    assert shared is not None
    assert (shared.group, shared.topic_filter) == ("workers", "orders/#")
    assert parse_shared("orders/#") is None
    for bad in ["$share/g", "$share//a", "$share/g+/a", "$share/g/a#"]:
        with pytest.raises(RemoteProtocolError):
            parse_shared(bad)
