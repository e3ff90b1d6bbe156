"""The subscription tree: which sessions want a message published on a topic.

Theory of operation: filters are stored in a trie keyed by topic level, with
`+` and `#` as ordinary children. Matching a topic walks the trie one level at
a time, following the exact level, `+` and `#`, so its cost grows with the
topic's depth, not with the number of subscriptions. Topics that start with
`$` are never matched by a wildcard in the first level [MQTT-4.7.2-1].

A match is aggregated per session (overlapping subscriptions deliver once, at
the highest QoS, with every subscription identifier) and cached per topic;
any change to the tree clears the cache.

In a cluster, `on_route(filter, present)` is told when a filter gets its first
subscriber here or loses its last one (for a shared subscription, the
`$share/<group>/<filter>` it was made with): the node's entries in the
cluster's route table.
"""

from __future__ import annotations

from collections.abc import Callable

from mqttish.core.session import Session, Subscription
from mqttish.core.shared import SharedGroup, Strategy
from mqttish.protocol.bounded_cache import BoundedCache
from mqttish.protocol.topics import matching_nodes, parse_shared

MATCH_CACHE_BYTES = 16 * 1024 * 1024
MATCH_ITEM_BYTES = 150  # what one target of a cached match costs (Target, its tuple, a list slot)
MAX_CACHED_MATCH = MATCH_CACHE_BYTES // 4  # a match for ~25,000 sessions is still cached


class Target:
    """One session's aggregated interest in one topic."""

    __slots__ = ("no_local", "qos", "retain_as_published", "session", "subscription_ids",
                 "subscriptions")

    def __init__(self, session: Session, subscriptions: list[Subscription]) -> None:
        self.session = session
        self.subscriptions = subscriptions
        self.qos = max(sub.qos for sub in subscriptions)
        self.retain_as_published = any(sub.retain_as_published for sub in subscriptions)
        self.subscription_ids = tuple(
            sub.identifier for sub in subscriptions if sub.identifier is not None
        )
        self.no_local = any(sub.no_local for sub in subscriptions)

    def without_no_local(self) -> Target | None:
        """This target as seen by its own publisher: No Local subscriptions left out."""
        kept = [sub for sub in self.subscriptions if not sub.no_local]
        return Target(self.session, kept) if kept else None


class Match:
    __slots__ = ("groups", "readers", "targets")

    def __init__(self, targets: list[Target], groups: list[SharedGroup[Subscription]]) -> None:
        self.targets = targets
        self.groups = groups
        # Security: the targets an ACL lets read this topic, and the hooks' generation they
        # were worked out for (Broker._readers).
        self.readers: tuple[int, frozenset[str]] | None = None


class _Node:
    __slots__ = ("children", "groups", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, Subscription] = {}
        self.groups: dict[str, SharedGroup[Subscription]] = {}

    def empty(self) -> bool:
        return not (self.children or self.subscribers or self.groups)


class SubscriptionTree:
    def __init__(self, strategy: Strategy = Strategy.ROUND_ROBIN) -> None:
        self.strategy = strategy  # for shared groups created from now on
        self._root = _Node()
        self._cache: BoundedCache[str, Match] = BoundedCache(MATCH_CACHE_BYTES, MAX_CACHED_MATCH)
        self.count = 0
        self.on_route: Callable[[str, bool], None] | None = None  # cluster routes (see above)

    def add(self, subscription: Subscription) -> SharedGroup[Subscription] | None:
        """Add or replace a subscription; return its group if it is a shared one."""
        shared = parse_shared(subscription.topic_filter)
        topic_filter = shared.topic_filter if shared else subscription.topic_filter
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        group = None
        if shared:
            group = node.groups.get(shared.group)
            if group is None:
                group = node.groups[shared.group] = SharedGroup(
                    shared.group, topic_filter, self.strategy)
            members = group.members
        else:
            members = node.subscribers
        new = subscription.client_id not in members
        self.count += new
        if new and not members and self.on_route is not None:
            self.on_route(subscription.topic_filter, True)
        members[subscription.client_id] = subscription
        self._cache.clear()
        return group

    def remove(self, client_id: str, subscribed_filter: str) -> bool:
        """Remove one subscription; True if it existed."""
        shared = parse_shared(subscribed_filter)
        topic_filter = shared.topic_filter if shared else subscribed_filter
        path = [self._root]
        for level in topic_filter.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        node = path[-1]
        if shared:
            group = node.groups.get(shared.group)
            if group is None or group.members.pop(client_id, None) is None:
                return False
            if not group.members:
                del node.groups[shared.group]
            gone = not group.members
        elif node.subscribers.pop(client_id, None) is None:
            return False
        else:
            gone = not node.subscribers
        if gone and self.on_route is not None:
            self.on_route(subscribed_filter, False)
        self.count -= 1
        self._cache.clear()
        levels = topic_filter.split("/")
        for depth in range(len(levels), 0, -1):
            if not path[depth].empty():
                break
            del path[depth - 1].children[levels[depth - 1]]
        return True

    def group(self, share_name: str) -> SharedGroup[Subscription] | None:
        """The shared group of `$share/<group>/<filter>`, if it has members here."""
        shared = parse_shared(share_name)
        if shared is None:
            return None
        node = self._root
        for level in shared.topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node.groups.get(shared.group)

    def groups(self) -> list[SharedGroup[Subscription]]:
        """Every shared subscription group, for metrics."""
        found: list[SharedGroup[Subscription]] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            found.extend(node.groups.values())
            stack.extend(node.children.values())
        return found

    def match(self, topic: str) -> Match:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        result = self._match(topic)
        size = len(topic) + MATCH_ITEM_BYTES * (len(result.targets) + len(result.groups))
        self._cache.put(topic, result, size)
        return result

    def _match(self, topic: str) -> Match:
        return self._aggregate(matching_nodes(self._root, topic))

    @staticmethod
    def _aggregate(nodes: list[_Node]) -> Match:
        by_session: dict[str, list[Subscription]] = {}
        groups: list[SharedGroup[Subscription]] = []
        for node in nodes:
            for client_id, subscription in node.subscribers.items():
                existing = by_session.get(client_id)
                if existing is None:
                    by_session[client_id] = [subscription]
                else:
                    existing.append(subscription)
            if node.groups:
                groups.extend(node.groups.values())
        targets = [Target(subs[0].session, subs) for subs in by_session.values()]
        return Match(targets, groups)
