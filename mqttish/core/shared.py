"""Shared subscriptions (`$share/<group>/<filter>`): one member of a group gets each message.

Theory of operation: a `SharedGroup` picks a member for each message with its
strategy, among the members that are *available*: connected, with fewer
messages outstanding (queued plus in flight) than their receive window. A
stalled member therefore stops being chosen once its window is full, and the
others carry the load. When no member is available (all offline, or all
saturated) the message waits in the group's bounded backlog, which drains as
soon as a member acknowledges, reconnects or joins. When a member goes away,
the broker takes back what it had not completed and gives it to the others.

Sticky keeps each topic on one member (rendezvous hashing over the connected
members), for ordering: it queues on that member even when its window is full,
and moves a topic only when its member disconnects.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sized
from enum import Enum
from typing import Generic, Protocol, TypeVar

from mqttish.core.backlog import Backlog
from mqttish.core.backpressure import Drainable


class Strategy(Enum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    LEAST_LOADED = "least_loaded"
    STICKY = "sticky"


# What a group needs to know of its members (sessions and their subscriptions, defined
# in core/session.py, which builds on this module).


class _Window(Protocol):
    @property
    def send_quota(self) -> int: ...


class _Flights(Protocol):
    @property
    def flights(self) -> Sized: ...


class MemberSession(Protocol):
    @property
    def connection(self) -> _Window | None: ...

    @property
    def queue(self) -> Sized: ...

    @property
    def outgoing(self) -> _Flights: ...

    def progressing(self, now: float, stall_timeout: float) -> bool: ...

    def stall_deadline(self, stall_timeout: float) -> float: ...


class Member(Protocol):
    """One member's subscription to the group."""

    @property
    def session(self) -> MemberSession: ...

    @property
    def client_id(self) -> str: ...

    @property
    def qos(self) -> int: ...

    @property
    def identifier(self) -> int | None: ...


M = TypeVar("M", bound=Member)


def outstanding(session: MemberSession) -> int:
    """Messages a session has been given and not yet completed."""
    return len(session.outgoing.flights) + len(session.queue)


def available(session: MemberSession) -> bool:
    connection = session.connection
    return connection is not None and outstanding(session) < connection.send_quota


class SharedGroup(Drainable, Generic[M]):
    """The members of one shared subscription, and the messages waiting for one."""

    __slots__ = ("_random", "_turn", "backlog", "delivered", "dropped", "members", "name",
                 "redelivered", "strategy", "topic_filter")

    def __init__(self, name: str, topic_filter: str, strategy: Strategy) -> None:
        super().__init__()
        self.name = name
        self.topic_filter = topic_filter
        self.strategy = strategy
        self.members: dict[str, M] = {}
        self.backlog = Backlog(self.share_name)
        self.delivered = 0
        self.redelivered = 0
        self.dropped = 0
        self._turn = 0
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"SharedGroup({self.name!r}, {self.topic_filter!r}, members={len(self.members)})"

    def progressing(self, now: float, stall_timeout: float) -> bool:
        return any(m.session.progressing(now, stall_timeout) for m in self.members.values())

    def stall_deadline(self, stall_timeout: float) -> float:
        return max((m.session.stall_deadline(stall_timeout) for m in self.members.values()),
                   default=0.0)

    @property
    def share_name(self) -> str:
        return f"$share/{self.name}/{self.topic_filter}"

    def pick(self, topic: str) -> M | None:
        """The member to give a message on `topic` to, or None if it must wait."""
        members = list(self.members.values())
        if not members:
            return None
        strategy = self.strategy
        if strategy is Strategy.STICKY:
            connected = [m for m in members if m.session.connection is not None]
            if not connected:
                return None
            return max(connected, key=lambda m: zlib.crc32(f"{m.client_id}\0{topic}".encode()))
        ready = [m for m in members if available(m.session)]
        if not ready:
            return None
        if strategy is Strategy.RANDOM:
            return self._random.choice(ready)
        if strategy is Strategy.LEAST_LOADED:
            return min(ready, key=lambda m: outstanding(m.session))
        count = len(members)
        for step in range(count):
            candidate = members[(self._turn + step) % count]
            if available(candidate.session):
                self._turn = (self._turn + step + 1) % count
                return candidate
        return None  # unreachable: `ready` was not empty
