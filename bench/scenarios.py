"""What each scenario measures and with how many clients: shared by the harness and generator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes and durations of one benchmark mode (full or smoke)."""

    warmup: float = 2.0  # seconds of load before measuring
    duration: float = 10.0  # seconds measured
    publishers: int = 10  # fan-in and latency
    window: int = 1000  # messages a publisher may have out that the subscriber has not seen
    inflight: int = 100  # QoS 1 PUBLISH a fan-in publisher may have unacknowledged
    stall_timeout: float = 2.0  # seconds: the brokers' stall timeout in overload-* (where they
    #                             have the knob), and the longest a publisher may be held back
    latency_sample: int = 8  # overload-qos0 keeps the latency of every Nth message
    sys_interval: float = 1.0  # seconds between $SYS updates in overload-* (drop counters)
    fanout_subscribers: int = 100
    fanout_window: int = 1000  # messages the publisher may have out that a subscriber has not seen
    latency_rate: float = 100.0  # messages per second per publisher
    idle_clients: int = 10_000
    retained: int = 100_000  # topics bench/ret/AAAA/BB, 100 per narrow wildcard
    stall: float = 1.0  # seconds without progress before a window's messages count as lost
    drain: float = 5.0  # most seconds to wait for stragglers after the load stops
    timeout: float = 120.0  # the longest a single phase (connecting, receiving) may take


FULL = Params()
SMOKE = replace(
    FULL, warmup=0.3, duration=1.0, fanout_subscribers=10, idle_clients=200, retained=2_000,
    drain=2.0, timeout=20.0, sys_interval=0.25, stall_timeout=0.5,
)

SCENARIOS: tuple[str, ...] = (
    "fan-in-qos0", "fan-in-qos1", "fan-out-qos0", "latency", "connections", "retained",
    "overload-qos1", "overload-stalled", "overload-qos0",
)
OVERLOAD = ("overload-qos1", "overload-stalled", "overload-qos0")

DESCRIPTIONS: dict[str, str] = {
    "fan-in-qos0": "10 publishers -> 1 subscriber, QoS 0",
    "fan-in-qos1": "10 publishers -> 1 subscriber, QoS 1, 100 in flight each",
    "fan-out-qos0": "1 publisher -> 100 subscribers, QoS 0",
    "latency": "10 publishers x 100 msg/s, QoS 1",
    "connections": "10,000 idle clients",
    "retained": "100,000 retained topics",
    "overload-qos1": "10 publishers -> 1 subscriber, QoS 1, no end-to-end window",
    "overload-stalled": "overload-qos1 plus a second subscriber that never reads",
    "overload-qos0": "10 publishers -> 1 subscriber, QoS 0, no end-to-end window",
}


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """The limits every broker is given for one scenario (None: the broker's default).

    The windowed scenarios raise the limits so that they measure the broker, not
    its limits; the overload ones keep the defaults, as a real deployment would,
    except a queue large enough to absorb bursts, $SYS every second so the
    harness can read the drop counter, and the stall timeout under test.
    """

    max_inflight: int | None
    max_queued: int | None
    sys_interval: float | None
    stall_timeout: float | None


WINDOWED_SETTINGS = BrokerSettings(max_inflight=1000, max_queued=200_000, sys_interval=None,
                                   stall_timeout=None)


def settings_for(scenario: str, params: Params) -> BrokerSettings:
    if scenario in OVERLOAD:
        return BrokerSettings(max_inflight=None, max_queued=100_000,
                              sys_interval=params.sys_interval,
                              stall_timeout=params.stall_timeout)
    return WINDOWED_SETTINGS


def params_for(smoke: bool, overrides: list[str] | None = None) -> Params:
    """The mode's sizes, with `NAME=VALUE` overrides (`--param inflight=300`)."""
    params = SMOKE if smoke else FULL
    for item in overrides or ():
        name, _, value = item.partition("=")
        fields = {f.name: f for f in dataclasses.fields(Params)}
        if name not in fields or not value:
            choices = ", ".join(fields)
            raise ValueError(f"--param {item!r}: expected NAME=VALUE with NAME one of {choices}")
        kind = type(getattr(params, name))
        params = replace(params, **{name: kind(float(value)) if kind is int else kind(value)})
    return params
