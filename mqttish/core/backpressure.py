"""Backpressure: a publisher waits while a subscriber that makes progress is full.

Theory of operation. Every queue a PUBLISH can land in (a session's queue of
deliveries, a shared group's backlog) is `Drainable`: publishers may wait for
it. When the fan-out of a PUBLISH meets a full queue whose consumer is making
progress, the broker stops there and returns a `HeldPublish` (core/broker.py)
that knows how to finish the fan-out later; the publishing connection waits
and is not read: TCP then pushes back on the device, and an MQTT 5 client also
feels its Receive Maximum, because its PUBACK is not sent yet. Only while the
broker waits for its acknowledgements (deliveries to it in flight) is it read
on, for those (so nobody waits on it in turn), deferring the rest up to a
bound. A queue releases its waiters when it has drained to half, and the held
fan-out resumes where it stopped, so every subscriber receives each message
exactly once and nothing acknowledged is dropped for a healthy consumer.

A consumer that has made no progress (taken or acknowledged nothing) for
`stall_timeout` seconds is stalled: it holds nobody back any more, and what
does not fit in its queue is dropped and counted, or it is disconnected, as
configured. So a stuck client can stop a fleet for at most that long.
"""

from __future__ import annotations

from typing import Protocol, cast


class Waiter(Protocol):
    """A publishing connection held until a queue drains."""

    def unblocked(self, now: float) -> None:
        """The queue it waited for has room again (or its consumer stalled)."""


NO_WAITERS = cast("list[Waiter]", ())  # shared by every queue nobody waits on


class Drainable:
    """A queue that publishers may wait on: it tells them when it has drained."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[Waiter] = NO_WAITERS

    def add_waiter(self, waiter: Waiter) -> None:
        if self.waiters is NO_WAITERS:
            self.waiters = []
        self.waiters.append(waiter)

    def remove_waiter(self, waiter: Waiter) -> None:
        """A waiter gave up (its connection closed)."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def release_waiters(self, now: float) -> None:
        """Let the publishers go on, first waiter last: whoever goes on first fills the
        queue and waits first again, so without this turn the same one would always
        get through and the others starve."""
        waiters, self.waiters = self.waiters, NO_WAITERS
        if len(waiters) > 1:
            waiters.append(waiters.pop(0))
        for waiter in waiters:
            waiter.unblocked(now)

    def progressing(self, now: float, stall_timeout: float) -> bool:
        """Is its consumer taking messages (so that waiting for it will end)?"""
        raise NotImplementedError

    def stall_deadline(self, stall_timeout: float) -> float:
        """When it counts as stalled if it makes no progress before."""
        raise NotImplementedError
