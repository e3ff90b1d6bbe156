"""Durations in the journal, wall-clock times in a store.

A record says "expires in 30 s" as of the moment it was emitted; a store
keeps "expires at 12:00:30" so that time spent down counts, and gives back
"expires in N s" at load (N may be negative: it expired while the broker was
down). Every store makes this conversion the same way, with a clock that
tests can replace.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]  # wall-clock seconds, like time.time

# The core ends expired sessions itself (publishing their wills); a store's
# housekeeping only removes those the core has evidently forgotten, so that it
# never races a client that reconnects at the last moment.
SESSION_EXPIRY_GRACE = 60.0


def deadline(now: float, seconds: float | None) -> float | None:
    return None if seconds is None else now + seconds


def remaining(now: float, at: float | None) -> float | None:
    return None if at is None else at - now
