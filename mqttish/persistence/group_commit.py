"""Group commit: the journal's changes reach the store in one transaction per round.

One task takes every change the core emitted since the last round, hands
them to `Store.apply` in a worker thread (the event loop goes on meanwhile,
and the changes it makes meanwhile form the next round), then tells the
journal how far it got, which releases the acknowledgements that waited for
it. A round costs one transaction however many changes it holds, so the
busier the broker, the more each commit carries.

A round starts once the event loop has gone quiet (every task waiting, for
`QUIET` seconds), or `GATHER_AT_MOST` after it could have started. Meanwhile
clients acknowledge what they were sent, and a delivery queued, sent and
acknowledged within one round is never written (the store keeps only a
batch's net effect). Starting at once wrote and then deleted nearly every
message of fan-in QoS 1 into a persistent session (docs/persistence.md).
"""

from __future__ import annotations

import bisect
import logging
import sys
from collections.abc import Callable

import trio
from trio.testing import wait_all_tasks_blocked

from mqttish.core.journal import Journal
from mqttish.core.metrics import PersistenceFigures
from mqttish.core.store import Store, StoreError, StoreStats

log = logging.getLogger("mqttish.persistence")

STORE_HOUSEKEEPING_INTERVAL = 60.0  # seconds between the store's housekeeping rounds
QUIET = 0.0005  # seconds every task must wait for the loop to count as quiet
GATHER_AT_MOST = 0.05  # seconds a round may wait for the loop to go quiet
# Upper bounds, in seconds, of the commit latency histogram's buckets (the last is +Inf).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


class CommitStats:
    """How commits go: a latency histogram and batch sizes, for $SYS and /metrics."""

    __slots__ = ("buckets", "changes", "commits", "last_batch", "latency_sum")

    def __init__(self) -> None:
        self.commits = 0
        self.changes = 0
        self.latency_sum = 0.0
        self.last_batch = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # counts per bucket, not cumulative

    def figures(self, stats: StoreStats) -> PersistenceFigures:
        return PersistenceFigures(stats.size_bytes, self.commits, self.changes, self.last_batch,
                                  self.latency_sum, LATENCY_BUCKETS, tuple(self.buckets))

    def record(self, latency: float, batch: int) -> None:
        self.commits += 1
        self.changes += batch
        self.latency_sum += latency
        self.last_batch = batch
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1


# How long the event loop's thread may keep the GIL before the commit thread gets it
# back (Python's default is 5 ms): while the loop is busy, a commit waits for the GIL
# between SQLite's calls, and acknowledgements wait for the commit. 1 ms took fan-in
# into a persistent session from about 0.35x to 0.5x of the in-memory rate
# (docs/persistence.md).
SWITCH_INTERVAL = 0.001


class GroupCommit:
    def __init__(self, journal: Journal, store: Store) -> None:
        self.journal = journal
        self.store = store
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self.stats = CommitStats()
        self._wanted: trio.Event | None = None

    async def run(self, on_failure: Callable[[StoreError], None]) -> None:
        """Commit rounds for ever (cancel it to stop, then `flush`); between them, now
        and then, the store's housekeeping. If the store fails (a full or broken disk),
        `on_failure` is told and commits stop: nothing that promises durability is
        acknowledged any more, and the server shuts down."""
        journal = self.journal
        housekeeping_due = trio.current_time() + STORE_HOUSEKEEPING_INTERVAL
        try:
            while True:
                if not journal.changes:
                    wanted = self._wanted = trio.Event()
                    journal.on_change = wanted.set
                    with trio.move_on_at(housekeeping_due):
                        await wanted.wait()
                if trio.current_time() >= housekeeping_due:
                    await trio.to_thread.run_sync(self.store.housekeeping)
                    housekeeping_due = trio.current_time() + STORE_HOUSEKEEPING_INTERVAL
                with trio.move_on_after(GATHER_AT_MOST):
                    await wait_all_tasks_blocked(QUIET)
                await self.flush()
        except StoreError as exc:
            log.critical("the store failed: %s", exc)
            on_failure(exc)

    async def flush(self) -> None:
        """Commit what the journal holds now."""
        changes, position = self.journal.take()
        if not changes:
            return
        started = trio.current_time()
        # Not abandoned on cancel: a commit that started is waited for, so that what
        # the broker has said it saved is saved.
        await trio.to_thread.run_sync(self.store.apply, changes)
        self.stats.record(trio.current_time() - started, len(changes))
        self.journal.committed_up_to(position)
