"""What the store tests share: a clock to turn by hand, the stores under test, random journals."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from anyio.from_thread import BlockingPortal
from hypothesis import strategies as st

from mqttish.cluster.store import RedisStore
from mqttish.core.store import (
    Change,
    DeliveryDeleted,
    DeliverySaved,
    DeliveryUpdated,
    IncomingHeld,
    IncomingReleased,
    MessageSaved,
    RetainedDeleted,
    RetainedSaved,
    SessionDeleted,
    SessionSaved,
    Store,
    StoredState,
    SubscriptionDeleted,
    SubscriptionSaved,
    WillDeleted,
    WillSaved,
)
from mqttish.persistence.memory import MemoryStore
from mqttish.persistence.sqlite import SqliteStore
from mqttish.protocol import properties as P
from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import RetainHandling, SubscriptionRequest, Will
from tests.unit.strategies import properties

START = 1_700_000_000.0  # a wall-clock time
_prefixes = itertools.count()


@dataclass(frozen=True)
class RedisForStores:
    """A running redis-server and a portal to an event loop that talks to it."""

    url: str
    portal: BlockingPortal


class Clock:
    """Wall-clock time that moves only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StoreUnderTest:
    """A store of one kind, and its restart: a SQLite or Redis store is closed and opened
    again. A Redis store needs `redis`: a server and a portal to an event loop, and gets a
    key prefix of its own."""

    def __init__(self, kind: str, path: Path, clock: Clock,
                 redis: RedisForStores | None = None) -> None:
        self.kind = kind
        self.path = path
        self.clock = clock
        self.redis = redis
        self.prefix = f"t{next(_prefixes)}"
        self.store: Store = self._open()

    def _open(self) -> Store:
        if self.kind == "sqlite":
            return SqliteStore(self.path, clock=self.clock)
        if self.kind == "redis":
            assert self.redis is not None
            store = RedisStore(None, self.prefix, "m", clock=self.clock,
                               portal=self.redis.portal)
            store.open(self.redis.url)
            return store
        return MemoryStore(self.clock)

    def restart(self) -> Store:
        if self.kind in ("sqlite", "redis"):
            self.store.close()
            self.store = self._open()
        return self.store


# ------------------------------------------------------------------ random journals
# A small world (two clients, a few ids), so that records meet the same rows often;
# text that needs escaping, to check how rows travel to SQLite.

client_ids = st.sampled_from(["a", 'b/ü😀"\\\x01'])
message_ids = st.integers(1, 4)
sequences = st.integers(1, 3)
packet_ids = st.integers(1, 2)
topics = st.sampled_from(["t/1", 't/ü😀"\\'])
topic_filters = st.sampled_from(["t/#", "t/1", "$share/g/t/+"])
durations = st.none() | st.floats(0, 1000, allow_nan=False)

requests = st.builds(SubscriptionRequest, topic_filters, st.integers(0, 2), st.booleans(),
                     st.booleans(), st.sampled_from(RetainHandling))
publish_properties = properties(P.PUBLISH).filter(lambda p: p.topic_alias is None)
wills = st.builds(Will, topics, st.binary(max_size=8), st.integers(0, 2), st.booleans(),
                  properties(P.WILL))

changes: st.SearchStrategy[Change] = st.one_of(
    st.builds(SessionSaved, client_ids, st.integers(0, 0xFFFFFFFF), st.booleans(), durations),
    st.builds(SessionDeleted, client_ids),
    st.builds(SubscriptionSaved, client_ids, requests, st.none() | st.integers(1, 9)),
    st.builds(SubscriptionDeleted, client_ids, topic_filters),
    st.builds(MessageSaved, message_ids, topics, st.binary(max_size=8), st.integers(0, 2),
              st.booleans(), publish_properties, durations),
    st.builds(DeliverySaved, client_ids, sequences, message_ids, st.integers(0, 2),
              st.booleans(), st.lists(st.integers(1, 9), max_size=2).map(tuple)),
    st.builds(DeliveryUpdated, client_ids, sequences, packet_ids,
              st.sampled_from(FlightState)),
    st.builds(DeliveryDeleted, client_ids, sequences),
    st.builds(IncomingHeld, client_ids, packet_ids),
    st.builds(IncomingReleased, client_ids, packet_ids),
    st.builds(RetainedSaved, topics, message_ids),
    st.builds(RetainedDeleted, topics),
    st.builds(WillSaved, client_ids, wills, st.floats(0, 100, allow_nan=False)),
    st.builds(WillDeleted, client_ids),
)

# A run of the broker: batches of records, the clock moving between them, and now
# and then housekeeping or a restart.
Step = tuple[str, list[Change], float]
steps: st.SearchStrategy[list[Step]] = st.lists(
    st.tuples(st.sampled_from(["apply"] * 6 + ["housekeeping", "restart"]),
              st.lists(changes, max_size=25), st.floats(0, 300, allow_nan=False)),
    max_size=10,
)


# ------------------------------------------------------------------ counting batches
# Batch n of a counting run queues message n for session "s", makes it the retained
# message, and acknowledges the one queued WINDOW batches before; `filler` messages more
# go through session "f" to make the batch bigger. Any state it leaves can tell which
# batch was the last one, and whether every earlier one is there as well.

WINDOW = 20
COUNTING_SESSIONS: list[Change] = [SessionSaved("s", 3600, False, None),
                                   SessionSaved("f", 3600, False, None)]


def counting_batch(number: int, filler: int = 0) -> list[Change]:
    first = number * 1000
    changes: list[Change] = [MessageSaved(first, "counter", str(number).encode(), 1, True),
                             DeliverySaved("s", number, first, 1, False),
                             RetainedSaved("counter", first), DeliveryDeleted("s", number - WINDOW)]
    for n in range(first + 1, first + 1 + filler):
        changes += [MessageSaved(n, "filler", b"f" * 500, 1, False),
                    DeliverySaved("f", n, n, 1, False), DeliveryDeleted("f", n - 1000)]
    return changes


def last_counted(state: StoredState) -> int:
    """The last batch of a counting run in `state`, after checking that all before it are there."""
    if not state.retained:
        return 0
    last = int(state.retained[0].payload)
    counter = next(session for session in state.sessions if session.client_id == "s")
    assert [d.sequence for d in counter.deliveries] == list(
        range(max(1, last - WINDOW + 1), last + 1))
    return last
