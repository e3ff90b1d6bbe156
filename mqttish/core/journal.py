"""The journal: changes that must survive a crash, in order, and how far the store has them.

The core appends a `Change` (core/store.py) whenever durable state changes;
the server takes the changes made so far (`take`), commits them in one
transaction off the event loop, and reports the position it reached
(`committed`). Whoever waits to reply until its changes are durable (a
connection holding a PUBACK) asks for a position and is woken once it is
committed.

A message is stored once, however many sessions queue it: it gets a store id
the first time a durable change refers to it. A store forgets a message once
nothing refers to it, so a message is saved again in every commit that refers
to it (once per commit: a message given back to a shared group's backlog and
queued for another member later is not lost).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mqttish.core.message import Message
from mqttish.core.store import Change, MessageSaved


class CommitWaiter(Protocol):
    def committed(self) -> None:
        """Something it waited for was committed."""


def _nothing() -> None:
    pass


class Journal:
    __slots__ = ("changes", "committed", "next_message_id", "on_change", "position", "saved",
                 "waiters")

    def __init__(self, next_message_id: int = 1) -> None:
        self.changes: list[Change] = []  # emitted, not yet taken for a commit
        self.position = 0  # changes emitted since start
        self.committed = 0  # changes the store has committed
        self.next_message_id = next_message_id
        self.waiters: list[CommitWaiter] = []
        self.on_change: Callable[[], None] = _nothing  # the first change after a take
        self.saved: set[int] = set()  # store ids of the messages saved in `changes`

    def emit(self, change: Change) -> None:
        changes = self.changes
        changes.append(change)
        self.position += 1
        if len(changes) == 1:
            self.on_change()

    def message_id(self, message: Message, now: float) -> int:
        """The store id of `message`, saving it with the first change of a commit that needs it."""
        store_id = message.store_id
        if not store_id:
            store_id = message.store_id = self.next_message_id
            self.next_message_id += 1
        if store_id not in self.saved:
            self.saved.add(store_id)
            self.emit(MessageSaved(store_id, message.topic, message.payload, message.qos,
                                   message.retain, message.properties,
                                   message.remaining_time(now)))
        return store_id

    def note(self) -> None:
        """Something that is not a store record must be committed with the changes made
        so far (a message forwarded to another node of a cluster): the position moves,
        so that a reply made from now on waits for the commit that carries it."""
        self.position += 1
        if not self.changes:
            self.on_change()

    def wait(self, waiter: CommitWaiter) -> None:
        """Notify `waiter` at the next commit."""
        self.waiters.append(waiter)

    def take(self) -> tuple[list[Change], int]:
        """The changes to commit now, and the position they reach."""
        changes, self.changes = self.changes, []
        self.saved = set()
        return changes, self.position

    def committed_up_to(self, position: int) -> None:
        """The store has everything up to `position`: wake whoever waited."""
        self.committed = position
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.committed()
