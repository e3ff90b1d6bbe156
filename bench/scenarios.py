"""What each scenario measures and with how many clients: shared by the harness and generator."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and durations of one benchmark mode (full or smoke)."""

    warmup: float = 2.0  # seconds of load before measuring
    duration: float = 10.0  # seconds measured
    publishers: int = 10  # fan-in and latency
    window: int = 1000  # messages a publisher may have out that the subscriber has not seen
    inflight: int = 100  # QoS 1 PUBLISH a fan-in publisher may have unacknowledged
    fanout_subscribers: int = 100
    latency_rate: float = 100.0  # messages per second per publisher
    idle_clients: int = 10_000
    retained: int = 100_000  # topics bench/ret/AAAA/BB, 100 per narrow wildcard
    stall: float = 1.0  # seconds without progress before a window's messages count as lost
    drain: float = 5.0  # most seconds to wait for stragglers after the load stops
    timeout: float = 120.0  # the longest a single phase (connecting, receiving) may take


FULL = Params()
SMOKE = replace(
    FULL, warmup=0.3, duration=1.0, fanout_subscribers=10, idle_clients=200, retained=2_000,
    drain=2.0, timeout=20.0,
)

SCENARIOS: tuple[str, ...] = (
    "fan-in-qos0", "fan-in-qos1", "fan-out-qos0", "latency", "connections", "retained",
)

DESCRIPTIONS: dict[str, str] = {
    "fan-in-qos0": "10 publishers -> 1 subscriber, QoS 0",
    "fan-in-qos1": "10 publishers -> 1 subscriber, QoS 1, 100 in flight each",
    "fan-out-qos0": "1 publisher -> 100 subscribers, QoS 0",
    "latency": "10 publishers x 100 msg/s, QoS 1",
    "connections": "10,000 idle clients",
    "retained": "100,000 retained topics",
}


def params_for(smoke: bool) -> Params:
    return SMOKE if smoke else FULL
