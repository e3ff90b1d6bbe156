"""Mosquitto's ACL file format and the decisions made from it."""

from __future__ import annotations

import pytest

from mqttish.auth.acl import AclChecker, AclFileError, Want, parse_acl_lines
from mqttish.protocol.topics import covers

ACL = """
# anonymous clients
topic read public/#

user alice
topic readwrite home/alice/#
topic deny home/alice/secret
topic write $SYS/broker/commands

user bob
topic read home/#
topic deny home/+/secret

pattern write devices/%c/state
pattern read inbox/%u/#
"""


@pytest.fixture
def acl() -> AclChecker:
    return AclChecker(parse_acl_lines(ACL.splitlines(), "acl"))


@pytest.mark.parametrize(("username", "client_id", "topic", "want", "allowed"), [
    (None, "anon", "public/news", Want.READ, True),
    (None, "anon", "public/news", Want.WRITE, False),
    (None, "anon", "home/alice/x", Want.READ, False),
    ("alice", "a1", "home/alice/lamp", Want.WRITE, True),
    ("alice", "a1", "home/alice/lamp", Want.READ, True),
    ("alice", "a1", "home/alice/secret", Want.READ, False),  # deny wins
    ("alice", "a1", "public/news", Want.READ, False),  # anonymous lines are not hers
    ("alice", "a1", "$SYS/broker/commands", Want.WRITE, True),
    ("bob", "b1", "home/alice/lamp", Want.READ, True),
    ("bob", "b1", "home/alice/lamp", Want.WRITE, False),
    ("bob", "b1", "home/alice/secret", Want.READ, False),
    ("carol", "c1", "home/alice/lamp", Want.READ, False),  # not listed: patterns only
    ("carol", "c1", "devices/c1/state", Want.WRITE, True),
    ("carol", "c1", "devices/c2/state", Want.WRITE, False),
    ("carol", "c1", "inbox/carol/1", Want.READ, True),
    ("carol", "c1", "inbox/dave/1", Want.READ, False),
    (None, "anon", "inbox/anon/1", Want.READ, False),  # %u never fills for anonymous
])
def test_decisions(acl: AclChecker, username: str | None, client_id: str, topic: str,
                   want: Want, allowed: bool) -> None:
    assert acl.allowed(username, client_id, topic, want) is allowed


@pytest.mark.parametrize(("username", "topic_filter", "allowed"), [
    ("bob", "home/#", True),
    ("bob", "home/+/lamp", True),
    ("bob", "#", False),  # wider than any rule: refused
    ("bob", "home/+/secret", False),
    ("bob", "home/alice/secret", False),
    ("alice", "home/alice/#", True),  # overlaps a deny: allowed, deliveries are filtered
    ("alice", "home/alice/secret", False),
    ("alice", "$SYS/broker/commands", False),  # write only
    (None, "public/+", True),
])
def test_subscribe_filters(acl: AclChecker, username: str | None, topic_filter: str,
                           allowed: bool) -> None:
    assert acl.allowed(username, "c", topic_filter, Want.SUBSCRIBE) is allowed


@pytest.mark.parametrize("name", ["#", "+", "a/b", "x/#"])
def test_wildcards_in_names_never_fill_patterns(acl: AclChecker, name: str) -> None:
    assert not acl.allowed(name, name, f"inbox/{name}/1", Want.READ)
    assert not acl.allowed("u", name, f"devices/{name}/state", Want.WRITE)
    assert not acl.allowed(name, "c", "inbox/anything/1", Want.READ)


def test_wildcard_rules_do_not_reach_dollar_topics() -> None:
    acl = AclChecker(parse_acl_lines(["topic readwrite #"], "acl"))
    assert acl.allowed(None, "c", "a/b", Want.WRITE)
    assert not acl.allowed(None, "c", "$SYS/broker/uptime", Want.WRITE)
    assert not acl.allowed(None, "c", "$SYS/#", Want.SUBSCRIBE)


@pytest.mark.parametrize(("rule", "topic_filter", "expected"), [
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/+", "a/b", True), ("a/+", "a/+", True),
    ("a/+", "a/#", False), ("a/b", "a/+", False), ("+/b", "x/b", True), ("#", "#", True),
    ("a/+/c", "a/b", False), ("a", "a/b", False), ("#", "$SYS/x", False),
])
def test_covers(rule: str, topic_filter: str, expected: bool) -> None:
    assert covers(rule, topic_filter) is expected


@pytest.mark.parametrize(("line", "problem"), [
    ("topoc read a", "expected 'user', 'topic' or 'pattern'"),
    ("topic read", "needs a topic filter"),
    ("topic read a/#/b", "invalid topic filter"),
    ("user", "needs a user name"),
])
def test_errors_name_the_line(line: str, problem: str) -> None:
    with pytest.raises(AclFileError) as error:
        parse_acl_lines(["topic read ok", line], "acl.conf")
    assert str(error.value).startswith("acl.conf:2:")
    assert problem in str(error.value)


def test_access_word_is_optional_and_topics_may_have_spaces() -> None:
    acl = AclChecker(parse_acl_lines(["topic living room/lamp"], "acl"))
    assert acl.allowed(None, "c", "living room/lamp", Want.WRITE)
    assert acl.allowed(None, "c", "living room/lamp", Want.READ)
