"""`python -m bench.store`: how fast SqliteStore.apply commits journals (docs/persistence.md).

The journal is what fan-in QoS 1 into a persistent session emits: for every
message, MessageSaved and DeliverySaved, and a DeliveryDeleted when its
PUBACK arrives, a few hundred messages later. It is cut into batches of 1,
100 and 1000 changes, each applied as one group commit, with `sync: normal`
and `sync: full`, for a few seconds each. With `--busy` another thread runs
Python meanwhile, as the broker's event loop does, and competes for the GIL.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mqttish.core.store import Change, DeliveryDeleted, DeliverySaved, MessageSaved, SessionSaved
from mqttish.persistence.schema import SyncMode
from mqttish.persistence.sqlite import SqliteStore

ACKNOWLEDGED_AFTER = 500  # messages between a delivery and its PUBACK
PAYLOAD = b"x" * 100


def fan_in_journal() -> Iterator[Change]:
    for number in itertools.count(1):
        yield MessageSaved(number, "bench/p/01", PAYLOAD, 1, False)
        yield DeliverySaved("subscriber", number, number, 1, False)
        if number > ACKNOWLEDGED_AFTER:
            yield DeliveryDeleted("subscriber", number - ACKNOWLEDGED_AFTER)


def measure(directory: Path, sync: SyncMode, batch_size: int, seconds: float) -> str:
    store = SqliteStore(directory / f"{sync}-{batch_size}.db", sync)
    store.apply([SessionSaved("subscriber", 3600, True, 3600.0)])
    journal = fan_in_journal()
    latencies = []
    changes = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = list(itertools.islice(journal, batch_size))
        before = time.perf_counter()
        store.apply(batch)
        latencies.append(time.perf_counter() - before)
        changes += len(batch)
    elapsed = time.perf_counter() - started
    store.close()
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    return (f"| {sync} | {batch_size} | {changes / elapsed:,.0f} | {len(latencies) / elapsed:,.0f} "
            f"| {statistics.mean(latencies) * 1000:.2f} | {p99 * 1000:.2f} |")


def keep_busy(stop: threading.Event) -> None:
    """Pure Python work, like an event loop that always has something to do."""
    count = 0
    while not stop.is_set():
        for _ in range(1000):
            count += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per configuration")
    parser.add_argument("--busy", action="store_true",
                        help="another thread runs Python meanwhile")
    args = parser.parse_args(argv)
    stop = threading.Event()
    if args.busy:
        threading.Thread(target=keep_busy, args=(stop,), daemon=True).start()
    print("| sync | changes per commit | changes/s | commits/s | apply mean (ms) "
          "| apply p99 (ms) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for sync in ("normal", "full"):
            for batch_size in (1, 100, 1000):
                print(measure(Path(directory), sync, batch_size, args.seconds), flush=True)
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
