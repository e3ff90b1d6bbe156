"""The cluster's route table as one node keeps it: which other nodes want which topics.

Every node has, in Redis, the set of filters its sessions subscribe to (a
shared subscription counts as its `$share/<group>/<filter>`), and
broadcasts each change; every node keeps all the other nodes' sets in this
table, a trie keyed by topic level like the subscription tree, so that a
publish costs the topic's depth, not the number of filters, and a cache per
topic makes a repeated topic cost one lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

from mqttish.protocol.bounded_cache import BoundedCache
from mqttish.protocol.topics import matching_nodes, parse_shared

CACHE_BYTES = 4 * 1024 * 1024
CACHE_ITEM = 64  # bytes charged per member or group of a cached match


class RemoteMatch:
    """The other nodes a topic goes to: those with plain subscribers, and per shared group
    (`$share/<group>/<filter>`) the nodes with members."""

    __slots__ = ("groups", "members")

    def __init__(self, members: tuple[str, ...],
                 groups: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        self.members = members
        self.groups = groups


NOWHERE = RemoteMatch((), ())


class _Node:
    __slots__ = ("children", "groups", "members")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.members: set[str] = set()
        self.groups: dict[str, set[str]] = {}  # share name -> members


class RouteTable:
    def __init__(self) -> None:
        self._root = _Node()
        self._by_member: dict[str, set[str]] = {}
        self._cache: BoundedCache[str, RemoteMatch] = BoundedCache(CACHE_BYTES, CACHE_BYTES // 8)
        self.count = 0  # (member, filter) entries

    def __bool__(self) -> bool:
        return bool(self.count)

    def members(self) -> list[str]:
        return list(self._by_member)

    def filters_of(self, member: str) -> set[str]:
        return self._by_member.get(member, set())

    def add(self, member: str, topic_filter: str) -> None:
        filters = self._by_member.setdefault(member, set())
        if topic_filter in filters:
            return
        filters.add(topic_filter)
        shared = parse_shared(topic_filter)
        node = self._root
        for level in (shared.topic_filter if shared else topic_filter).split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if shared:
            node.groups.setdefault(topic_filter, set()).add(member)
        else:
            node.members.add(member)
        self.count += 1
        self._cache.clear()

    def remove(self, member: str, topic_filter: str) -> None:
        filters = self._by_member.get(member)
        if not filters or topic_filter not in filters:
            return
        filters.discard(topic_filter)
        if not filters:
            del self._by_member[member]
        shared = parse_shared(topic_filter)
        levels = (shared.topic_filter if shared else topic_filter).split("/")
        path = [self._root]
        for level in levels:
            path.append(path[-1].children[level])
        node = path[-1]
        if shared:
            members = node.groups[topic_filter]
            members.discard(member)
            if not members:
                del node.groups[topic_filter]
        else:
            node.members.discard(member)
        for depth in range(len(levels), 0, -1):
            current = path[depth]
            if current.children or current.members or current.groups:
                break
            del path[depth - 1].children[levels[depth - 1]]
        self.count -= 1
        self._cache.clear()

    def replace(self, member: str, filters: Iterable[str]) -> None:
        """Set a member's entries to `filters` (a reload)."""
        wanted = set(filters)
        for topic_filter in self.filters_of(member) - wanted:
            self.remove(member, topic_filter)
        for topic_filter in wanted:
            self.add(member, topic_filter)

    def drop(self, member: str) -> None:
        """A member left the cluster."""
        self.replace(member, ())

    def sharing(self, share_name: str) -> tuple[str, ...]:
        """The members with members of this shared group."""
        shared = parse_shared(share_name)
        if shared is None:
            return ()
        node = self._root
        for level in shared.topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return ()
            node = child
        return tuple(sorted(node.groups.get(share_name, ())))

    def match(self, topic: str) -> RemoteMatch:
        if not self.count:
            return NOWHERE
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        members: set[str] = set()
        groups: dict[str, set[str]] = {}
        for node in matching_nodes(self._root, topic):
            members |= node.members
            for share_name, sharing in node.groups.items():
                groups.setdefault(share_name, set()).update(sharing)
        result = RemoteMatch(tuple(sorted(members)), tuple(
            (name, tuple(sorted(sharing))) for name, sharing in sorted(groups.items())))
        self._cache.put(topic, result, len(topic) + CACHE_ITEM * (len(members) + len(groups)))
        return result
