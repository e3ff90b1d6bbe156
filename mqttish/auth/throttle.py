"""Abuse resistance by address: new connections per second, and failed logins.

Both tables are bounded: past `MAX_ADDRESSES` the oldest entry is forgotten,
so a flood from many addresses costs a fixed amount of memory.
"""

from __future__ import annotations

from mqttish.core.rates import TokenBucket

MAX_ADDRESSES = 10_000
FREE_FAILURES = 3  # failed logins from one address before answers are slowed down
FIRST_DELAY = 0.5  # seconds, doubling with each further failure...
MAX_DELAY = 10.0  # ...up to this
FORGET_AFTER = 300.0  # seconds without a failure before an address starts afresh
MAX_WAIT = 30.0  # seconds of logins queued for one address, at most


def host_of(peer: str) -> str:
    """`1.2.3.4:5678` or `[::1]:5678` -> the address alone."""
    host = peer.rpartition(":")[0]
    return host or peer


class ConnectionRate:
    """New connections per second from one address, as a token bucket each."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, address: str, now: float) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= MAX_ADDRESSES:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[address] = TokenBucket(self.rate, now)
        return bucket.take(1, now)


class LoginThrottle:
    """Failed logins per address: past the first few, each login from that address
    waits its turn, and the turns grow further apart with every failure.

    Turns, not just a delay: parallel attempts from one address are spaced out
    too, and once the queue is `MAX_WAIT` long, further attempts are refused
    without looking at their password.
    """

    def __init__(self) -> None:
        # address -> [failures, time of the last failure, time of the next free turn]
        self._addresses: dict[str, list[float]] = {}

    def wait(self, address: str, now: float) -> float | None:
        """Seconds a login from `address` must wait before it is checked; None: refuse it."""
        entry = self._addresses.get(address)
        if entry is None:
            return 0.0
        count, last, turn = entry
        if now - last > FORGET_AFTER:
            del self._addresses[address]
            return 0.0
        if count <= FREE_FAILURES:
            return 0.0
        spacing = min(MAX_DELAY, FIRST_DELAY * 2 ** (count - FREE_FAILURES - 1))
        start = max(now, turn) + spacing
        if start - now > MAX_WAIT:
            return None
        entry[2] = start
        return start - now

    def failed(self, address: str, now: float) -> None:
        entry = self._addresses.pop(address, None)
        if entry is None or now - entry[1] > FORGET_AFTER:
            entry = [0, now, now]
        if len(self._addresses) >= MAX_ADDRESSES:
            del self._addresses[next(iter(self._addresses))]
        entry[0] += 1
        entry[1] = now
        self._addresses[address] = entry  # most recent last: the oldest goes first

    def succeeded(self, address: str) -> None:
        self._addresses.pop(address, None)
