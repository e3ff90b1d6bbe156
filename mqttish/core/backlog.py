"""A shared group's backlog: the messages no member can take yet, in order.

Workers that are all busy are the normal state of a job queue, so the backlog
is where acknowledged jobs wait: with a durable store it must survive a crash
like a session's queue. A durable backlog is journalled as the deliveries of
a session of its own, named `BACKLOG_PREFIX` + the group's share name: no
client can take that name (the broker refuses client ids with control
characters), every store keeps it with the rules it has for sessions, and the
broker gives it back to the group when it starts. In a cluster every node
holds a backlog of its own for a group, named with the node's name too; a
node that dies leaves it to the node that adopts it, which gives its messages
to the group's members, wherever they are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.store import DeliveryDeleted, DeliverySaved, SessionDeleted, SessionSaved
from mqttish.protocol.properties import SESSION_NEVER_EXPIRES
from mqttish.protocol.topics import SHARE_PREFIX

BACKLOG_PREFIX = "\x01"


def backlog_store_name(share_name: str, node: str = "") -> str:
    """The name of the stored session that holds a group's backlog (on `node`, in a
    cluster)."""
    return f"{BACKLOG_PREFIX}{node}{BACKLOG_PREFIX}{share_name}" if node else \
        BACKLOG_PREFIX + share_name


def backlog_share_name(store_name: str) -> str | None:
    """The share name whose backlog a stored session holds, or None: a client's session."""
    if not store_name.startswith(BACKLOG_PREFIX):
        return None
    name = store_name[len(BACKLOG_PREFIX):]
    return name if name.startswith(SHARE_PREFIX) else name.partition(BACKLOG_PREFIX)[2]


class Backlog:
    """Messages waiting for a member: (message, possibly seen before, journal sequence)."""

    __slots__ = ("_entries", "_sequence", "journal", "store_name")

    def __init__(self, share_name: str) -> None:
        self._entries: deque[tuple[Message, bool, int]] = deque()
        self.store_name = backlog_store_name(share_name)
        self.journal: Journal | None = None  # set once the backlog is durable
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def first(self) -> tuple[Message, bool]:
        message, dup, _ = self._entries[0]
        return message, dup

    def append(self, message: Message, dup: bool, now: float,
               journal: Journal | None = None) -> None:
        """Add a message; with a `journal` (a QoS 1 or 2 message of a group that outlives
        a restart), also to the store."""
        sequence = 0
        if journal is not None and message.qos:
            if self.journal is None:
                self.journal = journal
                journal.emit(SessionSaved(self.store_name, SESSION_NEVER_EXPIRES, False))
            self._sequence = sequence = self._sequence + 1
            journal.emit(DeliverySaved(self.store_name, sequence,
                                       journal.message_id(message, now), message.qos, False))
        self._entries.append((message, dup, sequence))

    def popleft(self) -> None:
        """The first message went to a member (whose queue has it now) or expired."""
        _, _, sequence = self._entries.popleft()
        if sequence and self.journal is not None:
            self.journal.emit(DeliveryDeleted(self.store_name, sequence))

    def restore(self, entries: Iterable[tuple[int, Message]], journal: Journal | None) -> None:
        """Take back what the store kept, in sequence order: maybe seen before (DUP)."""
        self.journal = journal
        for sequence, message in entries:
            self._entries.append((message, message.qos > 0, sequence))
            self._sequence = sequence

    def discard(self) -> None:
        """The group is gone (its last member left): so are its messages."""
        self._entries.clear()
        if self.journal is not None:
            self.journal.emit(SessionDeleted(self.store_name))
            self.journal = None
