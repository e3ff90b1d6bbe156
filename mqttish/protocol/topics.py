"""Topic names and topic filters (MQTT section 4.7), and shared subscriptions (4.8.2)."""

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mqttish.errors import RemoteProtocolError
from mqttish.protocol.reason_codes import ReasonCode

SHARE_PREFIX = "$share/"


def _invalid_name(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, ReasonCode.TOPIC_NAME_INVALID)


def _invalid_filter(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, ReasonCode.TOPIC_FILTER_INVALID)


def validate_topic_name(topic: str) -> None:
    """A topic name a PUBLISH may carry: non-empty, no wildcards."""
    if not topic:
        raise _invalid_name("[MQTT-4.7.3-1] topic name must be at least one character")
    if "+" in topic or "#" in topic:
        raise _invalid_name("[MQTT-3.3.2-2] topic name must not contain wildcards")


def validate_topic_filter(topic_filter: str) -> None:
    """A filter a SUBSCRIBE may carry: wildcards only as whole levels, '#' last."""
    if not topic_filter:
        raise _invalid_filter("[MQTT-4.7.3-1] topic filter must be at least one character")
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise _invalid_filter(
                "[MQTT-4.7.1-2] '#' must occupy a whole level and be the last one"
            )
        if "+" in level and level != "+":
            raise _invalid_filter("[MQTT-4.7.1-3] '+' must occupy a whole level")


@dataclass(frozen=True, slots=True)
class SharedFilter:
    group: str
    topic_filter: str


def parse_shared(topic_filter: str) -> SharedFilter | None:
    """Split `$share/<group>/<filter>`; None for an ordinary filter."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    rest = topic_filter[len(SHARE_PREFIX):]
    group, sep, inner = rest.partition("/")
    if not sep or not group or not inner:
        raise _invalid_filter("[MQTT-4.8.2-1] shared subscription needs $share/<group>/<filter>")
    if "+" in group or "#" in group:
        raise _invalid_filter("[MQTT-4.8.2-2] share name must not contain wildcards")
    validate_topic_filter(inner)
    return SharedFilter(group, inner)


BRIDGE_STATE_PREFIX = "$SYS/broker/connection/"


def reserved_for_broker(topic: str) -> bool:
    """Topics only the broker publishes to, as in Mosquitto: `$SYS...` (bridges may report
    their state under $SYS/broker/connection/) and `$share...`. Clients need an explicit
    ACL grant to write there."""
    if not topic.startswith("$"):
        return False
    if topic.startswith("$SYS"):
        return not topic.startswith(BRIDGE_STATE_PREFIX)
    return topic.startswith("$share")


def validate_subscription_filter(topic_filter: str) -> None:
    """A filter a SUBSCRIBE or UNSUBSCRIBE may carry: plain, or `$share/<group>/<filter>`."""
    if parse_shared(topic_filter) is None:
        validate_topic_filter(topic_filter)


def has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def covers(topic_filter: str, other: str) -> bool:
    """Whether `topic_filter` matches every topic that `other` can stand for: `other` is a
    topic name (then: whether it matches it) or a filter (`sensors/#` covers
    `sensors/+/temp`); an ACL rule is checked against a subscription this way."""
    if other.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # a leading wildcard never matches a `$` topic [MQTT-4.7.2-1]
    filter_levels = topic_filter.split("/")
    levels = other.split("/")
    for index, filter_level in enumerate(filter_levels):
        if filter_level == "#":
            return True
        if index >= len(levels):
            return False
        level = levels[index]
        if level == "#" or (filter_level != "+" and (level == "+" or level != filter_level)):
            return False
    return len(filter_levels) == len(levels)


def matches(topic_filter: str, topic: str) -> bool:
    """Whether one filter matches one topic name; the reference the tree is tested against."""
    return covers(topic_filter, topic)


class FilterNode(Protocol):
    """A level of a tree of topic filters: its children by the next level's name."""

    children: dict[str, Any]


Node = TypeVar("Node", bound=FilterNode)


def matching_nodes(root: Node, topic: str) -> list[Node]:
    """The nodes of a filter tree whose filters match `topic`: each level by name, `+`
    and `#`; `a/#` matches `a` too; a `$` topic is matched by no wildcard at its first
    level [MQTT-4.7.2-1]."""
    found: list[Node] = []
    nodes = [root]
    wildcards_allowed = not topic.startswith("$")
    for level in topic.split("/"):
        next_nodes = []
        for node in nodes:
            children = node.children
            if not children:
                continue
            if wildcards_allowed:
                multi = children.get("#")
                if multi is not None:
                    found.append(multi)
                single = children.get("+")
                if single is not None:
                    next_nodes.append(single)
            exact = children.get(level)
            if exact is not None:
                next_nodes.append(exact)
        wildcards_allowed = True
        nodes = next_nodes
        if not nodes:
            break
    for node in nodes:
        found.append(node)
        parent_match = node.children.get("#")  # "a/#" also matches "a"
        if parent_match is not None:
            found.append(parent_match)
    return found
