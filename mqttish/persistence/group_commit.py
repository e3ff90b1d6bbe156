"""Group commit: the journal's changes reach the store in one transaction per round.

One task takes every change the core emitted since the last round, hands
them to `Store.apply` in a worker thread (the event loop goes on meanwhile,
and the changes it makes meanwhile form the next round), then tells the
journal how far it got, which releases the acknowledgements that waited for
it. A round costs one transaction however many changes it holds, so the
busier the broker, the more each commit carries.
"""

from __future__ import annotations

import bisect
import logging

import trio

from mqttish.core.journal import Journal
from mqttish.core.store import Store

log = logging.getLogger("mqttish.persistence")

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

    def record(self, latency: float, batch: int) -> None:
        self.commits += 1
        self.changes += batch
        self.latency_sum += latency
        self.last_batch = batch
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1


class GroupCommit:
    def __init__(self, journal: Journal, store: Store) -> None:
        self.journal = journal
        self.store = store
        self.stats = CommitStats()
        self._wanted: trio.Event | None = None

    async def run(self) -> None:
        """Commit rounds for ever (cancel it to stop, then `flush`)."""
        journal = self.journal
        while True:
            if not journal.changes:
                wanted = self._wanted = trio.Event()
                journal.on_change = wanted.set
                await wanted.wait()
            await self.flush()

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
