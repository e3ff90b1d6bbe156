"""What each scenario measures and with how many clients: shared by the harness and generator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path


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
    users: int = 10_000  # in the password file of the *-auth and login-storm scenarios
    acl_rules: int = 1_000  # in their ACL file, a tenth of them patterns
    storm_attempts: int = 1_000  # wrong-password CONNECTs in login-storm
    storm_parallel: int = 100  # of them waiting for their answer at once
    storm_addresses: int = 1  # loopback addresses they come from (127.0.0.N): the broker's
    #                           login throttle counts failures per address
    rtt_interval: float = 0.005  # seconds between the healthy client's round trips
    restart_retained: int = 100_000  # retained messages held across a restart
    restart_sessions: int = 1_000  # persistent sessions held across a restart...
    restart_queued: int = 100  # ...each with this many QoS 1 messages queued
    stall: float = 1.0  # seconds without progress before a window's messages count as lost
    drain: float = 5.0  # most seconds to wait for stragglers after the load stops
    timeout: float = 120.0  # the longest a single phase (connecting, receiving) may take


FULL = Params()
SMOKE = replace(
    FULL, warmup=0.3, duration=1.0, fanout_subscribers=10, idle_clients=200, retained=2_000,
    drain=2.0, timeout=20.0, sys_interval=0.25, stall_timeout=0.5, users=200, acl_rules=100,
    storm_attempts=10, restart_retained=2_000, restart_sessions=20, restart_queued=10,
)

STANDARD: tuple[str, ...] = (  # default settings, no auth, no persistence
    "fan-in-qos0", "fan-in-qos1", "fan-out-qos0", "latency", "connections", "retained",
    "overload-qos1", "overload-stalled", "overload-qos0",
)
OVERLOAD = ("overload-qos1", "overload-stalled", "overload-qos0")
AUTH = ("fan-in-qos0-auth", "fan-out-qos0-auth", "login-storm", "login-storm-argon2id")
PERSISTENT = ("fan-in-qos1-persistent", "restart")
SCENARIOS: tuple[str, ...] = (*STANDARD, *AUTH, *PERSISTENT)
# Scenarios only some brokers can run (the others: every broker). aedes and amqtt have no
# password or ACL files in Mosquitto's formats, nor a store of their own.
ONLY_ON: dict[str, tuple[str, ...]] = {
    **{name: ("mqttish", "mosquitto") for name in (*AUTH, *PERSISTENT)},
    "login-storm-argon2id": ("mqttish",),  # Mosquitto 2.0 cannot read argon2id hashes
}


def runs_on(scenario: str, broker: str) -> bool:
    return broker in ONLY_ON.get(scenario, (broker,))


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
    "fan-in-qos0-auth": "fan-in-qos0, clients logged in, 10,000 users, 1,000 ACL rules",
    "fan-out-qos0-auth": "fan-out-qos0, clients logged in, 10,000 users, 1,000 ACL rules",
    "login-storm": "a client's round trips during 1,000 wrong-password CONNECTs "
                   "(mosquitto_passwd's $7$ hashes)",
    "login-storm-argon2id": "login-storm with argon2id hashes (mqttish passwd's default)",
    "fan-in-qos1-persistent": "fan-in-qos1 into a persistent session, persistence on",
    "restart": "restart with 100,000 retained and 1,000 sessions x 100 queued messages",
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
    # Set per run by bench/run_setup.py for the auth and persistence scenarios:
    password_file: Path | None = None  # anonymous clients are refused then
    acl_file: Path | None = None
    store: Path | None = None  # persistence on, the store in this directory
    metrics_port: int | None = None  # mqttish: an HTTP listener serving /metrics


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
