"""Retained messages: the last retained message of each topic, found by filter.

Stored in a trie keyed by topic level, so a filter visits only the branches
it can match: `sensors/+/temperature` touches the children of `sensors`,
not every retained topic.
"""

from __future__ import annotations

from collections.abc import Iterator

from mqttish.core.message import Message


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class RetainedStore:
    def __init__(self) -> None:
        self._root = _Node()
        self.count = 0
        self.bytes = 0

    def set(self, message: Message) -> None:
        """Retain `message` for its topic, or clear the topic if its payload is empty."""
        if not message.payload:
            self.clear(message.topic)
            return
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if node.message is None:
            self.count += 1
        else:
            self.bytes -= len(node.message.payload)
        self.bytes += len(message.payload)
        node.message = message

    def clear(self, topic: str) -> None:
        levels = topic.split("/")
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        node = path[-1]
        if node.message is None:
            return
        self.count -= 1
        self.bytes -= len(node.message.payload)
        node.message = None
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.children or node.message is not None:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def get(self, topic: str) -> Message | None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node.message

    def match(self, topic_filter: str) -> Iterator[Message]:
        """Every retained message whose topic `topic_filter` matches."""
        levels = topic_filter.split("/")
        last = len(levels) - 1
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            level = levels[index]
            if level == "#":  # "a/#" matches "a" too: the subtree includes its root
                yield from _subtree(node, hide_dollar=index == 0)
                continue
            if level == "+":
                children = [
                    child for name, child in node.children.items()
                    if not (index == 0 and name.startswith("$"))
                ]
            else:
                exact = node.children.get(level)
                if exact is None:
                    continue
                children = [exact]
            for child in children:
                if index < last:
                    stack.append((child, index + 1))
                elif child.message is not None:
                    yield child.message

    def messages(self) -> Iterator[Message]:
        yield from _subtree(self._root, hide_dollar=False)


def _subtree(node: _Node, hide_dollar: bool) -> Iterator[Message]:
    """Messages at `node` and below it."""
    if node.message is not None:
        yield node.message
    stack = [
        child for name, child in node.children.items()
        if not (hide_dollar and name.startswith("$"))
    ]
    while stack:
        current = stack.pop()
        if current.message is not None:
            yield current.message
        stack.extend(current.children.values())
