"""Python's garbage collector, set for a broker: a large heap that lives long, and
many small objects per message that die young."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# A young collection every 10,000 allocations rather than 700 (Python's default),
# and the older generations a little less often: about 5% more messages per second
# in fan-in QoS 1, with and without persistence (docs/performance.md).
THRESHOLDS = (10_000, 20, 20)


def tune_for_serving() -> None:
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def paused() -> Iterator[None]:
    """No collections meanwhile: loading a store builds a heap of objects that all
    stay, and every collection on the way would walk through all of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
