"""When group commit rounds start: once the loop goes quiet, or after GATHER_AT_MOST."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from mqttish.core.journal import Journal
from mqttish.core.store import Change, SessionSaved, StoreError
from mqttish.persistence.group_commit import GATHER_AT_MOST, GroupCommit
from mqttish.persistence.memory import MemoryStore


class CountingStore(MemoryStore):
    """A memory store that notes how many changes each commit carried."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def apply(self, changes: Sequence[Change]) -> None:
        self.batches.append(len(changes))
        super().apply(changes)


class Committed:
    def __init__(self) -> None:
        self.event = trio.Event()

    def committed(self) -> None:
        self.event.set()


def _never_fails(error: StoreError) -> None:
    raise AssertionError(error)


def _change(number: int) -> SessionSaved:
    return SessionSaved(f"client-{number}", 3600, True, 3600.0)


async def test_a_round_waits_until_the_busy_loop_goes_quiet() -> None:
    journal, store = Journal(), CountingStore()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(GroupCommit(journal, store).run, _never_fails)
        for number in range(100):  # busy: the loop always has this task to run
            journal.emit(_change(number))
            await trio.lowlevel.checkpoint()
        done = Committed()
        journal.wait(done)
        with trio.fail_after(5):
            await done.event.wait()
        nursery.cancel_scope.cancel()
    assert store.batches == [100]  # one round, not one for the first change and the rest


async def test_a_round_starts_after_a_while_however_busy_the_loop() -> None:
    journal, store = Journal(), CountingStore()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(GroupCommit(journal, store).run, _never_fails)
        number = 0
        busy_until = trio.current_time() + 10 * GATHER_AT_MOST
        while trio.current_time() < busy_until:
            journal.emit(_change(number))
            number += 1
            await trio.lowlevel.checkpoint()
        committed_while_busy = list(store.batches)
        nursery.cancel_scope.cancel()
    assert len(committed_while_busy) >= 2
    assert committed_while_busy[0] > 1
