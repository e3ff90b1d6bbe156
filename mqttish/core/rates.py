"""Token buckets: how fast one client, or one address, may go.

A bucket holds up to one second's worth of its rate and refills continuously.
Taking succeeds while the bucket holds the cost; a cost larger than the whole
bucket (a message bigger than a second's worth of bytes) goes through when
the bucket is full and leaves a debt that is paid back before the next one.
"""

from __future__ import annotations

from mqttish.protocol.reason_codes import ReasonCode


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = now

    def take(self, cost: float, now: float) -> bool:
        """Spend `cost` tokens if the bucket holds them (or is full); False if not."""
        tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if tokens < min(cost, self.capacity):
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True


class ClientRates:
    """One client's limits on PUBLISH packets and on bytes received per second."""

    __slots__ = ("bytes", "messages")

    def __init__(self, message_rate: float, byte_rate: float, now: float) -> None:
        self.messages = TokenBucket(message_rate, now) if message_rate else None
        self.bytes = TokenBucket(byte_rate, now) if byte_rate else None

    def received(self, size: int, now: float) -> ReasonCode | None:
        """Bytes arrived: QUOTA_EXCEEDED if the client is over its byte rate."""
        if self.bytes is not None and not self.bytes.take(size, now):
            return ReasonCode.QUOTA_EXCEEDED
        return None

    def published(self, now: float) -> ReasonCode | None:
        """A PUBLISH arrived: MESSAGE_RATE_TOO_HIGH if the client is over its rate."""
        if self.messages is not None and not self.messages.take(1, now):
            return ReasonCode.MESSAGE_RATE_TOO_HIGH
        return None
