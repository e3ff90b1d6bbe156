"""Fleet mode: thousands of simulated sensors in one process, at a set aggregate rate.

Theory of operation: each simulated sensor is a full `TemperatureSensor` with
its own MQTT connection, will and status, exactly as a single device would be;
what the fleet adds is pacing and reporting. All sensors share one
`ClientOptions` and connect at most `connect_concurrency` at a time (so the
broker's listen backlog is not flooded). Once all are online, a starting gun
gives them one epoch: with N sensors at R readings per second each sensor
reads every N / R seconds, sensor i offset by i / R, so the broker sees an
even stream rather than bursts. Every sensor sleeps on trio's timer heap
until its next slot; there is no per-message task, lock or queue beyond the
client's own. A once-a-second task sums the sensors' counters for the
progress line; nothing on the publishing path keeps statistics but an
integer increment.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import trio

from simulators.common import BrokerSettings
from simulators.sensor import (
    READING_TOPIC,
    Climate,
    SensorConfig,
    StartingGun,
    TemperatureSensor,
)

log = logging.getLogger("simulators.fleet")

GRACE = 10.0  # seconds for sensors to finish in-flight publishes and say goodbye


@dataclass(frozen=True, slots=True)
class FleetConfig:
    sensors: int = 1000
    rate: float = 1000.0  # readings per second, all sensors together
    duration: float | None = None  # seconds of publishing; None: until stopped
    site: str = "fleet"
    topic: str = READING_TOPIC  # template: {site}, {room} (room-00001...), {sensor}
    qos: int = 1
    retain: bool = False
    climate: Climate = field(default_factory=Climate)
    connect_concurrency: int = 100  # connections being set up at once, at most

    def __post_init__(self) -> None:
        if self.sensors < 1:
            raise ValueError("sensors: must be at least 1")
        if self.rate <= 0:
            raise ValueError("rate: must be more than 0 readings per second")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration: must be more than 0 seconds")
        if self.connect_concurrency < 1:
            raise ValueError("connect_concurrency: must be at least 1")

    def sensor(self, number: int) -> SensorConfig:
        interval = self.sensors / self.rate
        return SensorConfig(
            site=self.site, room=f"room-{number:05d}", sensor_id=f"{self.site}-{number:05d}",
            topic=self.topic, interval=interval, qos=self.qos, retain=self.retain,
            climate=self.climate, phase=(number - 1) / self.rate % interval,
        )


@dataclass(frozen=True, slots=True)
class Counts:
    """The fleet's counters at one instant."""

    connected: int
    published: int
    errors: int
    skipped: int


@dataclass(frozen=True, slots=True)
class FleetReport:
    """The summary printed at the end (and what tests compare with what arrived)."""

    sensors: int
    connected: int  # sensors connected when publishing stopped
    published: int  # readings the broker accepted (acknowledged, for QoS 1 and 2)
    errors: int  # readings the broker refused
    skipped: int  # readings not made because publishing fell behind the schedule
    connect_seconds: float  # from the first connection attempt to all sensors online
    seconds: float  # publishing time
    target_rate: float
    qos: int

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        acknowledged = "sent" if self.qos == 0 else "acknowledged"
        return [
            "fleet summary:",
            f"  sensors      {self.sensors} ({self.connected} connected at the end, "
            f"all online after {self.connect_seconds:.1f} s)",
            f"  published    {self.published} readings at QoS {self.qos} ({acknowledged})",
            f"  duration     {self.seconds:.1f} s",
            f"  rate         {self.rate:.1f} readings/s (target {self.target_rate:g})",
            f"  skipped      {self.skipped} (publishing fell behind the schedule)",
            f"  errors       {self.errors}",
        ]


class Fleet:
    """Runs `config.sensors` sensors; `run()` returns the summary."""

    def __init__(self, config: FleetConfig, broker: BrokerSettings, seed: int | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.broker = broker
        self.gun = StartingGun()
        self.sensors = [
            TemperatureSensor(config.sensor(number), broker,
                              random.Random(f"{seed}:{number}" if seed is not None else None),
                              wall, self.gun)
            for number in range(1, config.sensors + 1)
        ]
        self._stopped = trio.Event()

    def stop(self) -> None:
        """End the fleet: stop publishing, let in-flight readings finish, disconnect."""
        self._stopped.set()

    def counts(self) -> Counts:
        connected = published = errors = skipped = 0
        for sensor in self.sensors:
            client = sensor.client
            if client is not None and client.is_connected:
                connected += 1
            published += sensor.published
            errors += sensor.errors
            skipped += sensor.skipped
        return Counts(connected, published, errors, skipped)

    async def run(self) -> FleetReport:
        """Connect every sensor, publish for the duration (or until stopped), summarise."""
        config = self.config
        raise_fd_limit(config.sensors)
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as connecting:
                nursery.start_soon(self._cancel_when_stopped, connecting)
                await self._connect_all(nursery)
            connect_seconds = trio.current_time() - began
            if not self._stopped.is_set():
                log.info("%d sensors online after %.1f s; publishing %g readings/s in total",
                         config.sensors, connect_seconds, config.rate)
            self.gun.fire()
            with trio.move_on_after(config.duration if config.duration else math.inf):
                await self._stopped.wait()
            self._stopped.set()  # the duration is over: ends _cancel_when_stopped too
            seconds = trio.current_time() - self.gun.epoch
            counts_at_stop = self.counts()
            for sensor in self.sensors:
                sensor.stop()
            # In-flight readings still complete (and count); a broker that is gone gets GRACE.
            nursery.cancel_scope.deadline = trio.current_time() + GRACE
        counts = self.counts()
        return FleetReport(
            sensors=config.sensors, connected=counts_at_stop.connected,
            published=counts.published, errors=counts.errors, skipped=counts.skipped,
            connect_seconds=connect_seconds, seconds=seconds, target_rate=config.rate,
            qos=config.qos)

    async def _connect_all(self, nursery: trio.Nursery) -> None:
        """Start every sensor, `connect_concurrency` connections in progress at a time."""
        limiter = trio.CapacityLimiter(self.config.connect_concurrency)

        async def start(sensor: TemperatureSensor) -> None:
            async with limiter:
                await nursery.start(sensor.run)

        async with trio.open_nursery() as starters:
            for sensor in self.sensors:
                starters.start_soon(start, sensor)

    async def _cancel_when_stopped(self, scope: trio.CancelScope) -> None:
        await self._stopped.wait()
        scope.cancel()

    async def show_progress(self, stream: TextIO = sys.stderr, log_every: float = 10.0) -> None:
        """Report connected / published per second / errors until cancelled.

        On a terminal it is one line rewritten every second; otherwise (a log
        file, a CI job) a log line every `log_every` seconds, and at once when
        sensors lose their connection.
        """
        tty = stream.isatty()
        previous = self.counts()
        last = last_logged = trio.current_time()
        try:
            while True:
                await trio.sleep(1.0)
                counts = self.counts()
                now = trio.current_time()
                rate = (counts.published - previous.published) / (now - last)
                line = (f"{counts.connected}/{self.config.sensors} connected, "
                        f"{rate:.0f} readings/s, {counts.published} published, "
                        f"{counts.errors} errors")
                if tty:
                    stream.write(f"\r\x1b[Kfleet: {line}")
                    stream.flush()
                elif (counts.connected < previous.connected and self.gun.fired
                      and not self._stopped.is_set()):
                    log.warning("%d sensors lost their connection; they reconnect with backoff",
                                previous.connected - counts.connected)
                elif now - last_logged >= log_every:
                    log.info("%s", line)
                    last_logged = now
                previous, last = counts, now
        finally:
            if tty:
                stream.write("\n")
                stream.flush()


def raise_fd_limit(clients: int) -> None:
    """Each simulated sensor needs a socket: raise the soft limit on open files if needed."""
    wanted = clients + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning("only %d open files allowed (ulimit -n): not enough for %d sensors",
                        new, clients)
