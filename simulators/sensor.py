"""A simulated temperature sensor: realistic readings, a retained status kept true by a will.

Theory of operation: `TemperatureModel` is sans-IO. It is asked for the
temperature at a given time, on the sensor's own timeline (seconds since it
started), and answers from a seeded `random.Random`: a random walk pulled back
towards the set point, measurement noise on each reading, and now and then a
spike (a door left open, an oven) that decays with a half-life. The sensor
asks for readings at their *scheduled* times, not at the moment the task
happened to wake up, so the same seed gives the same readings on any machine.

`TemperatureSensor` publishes those readings as JSON and keeps
`<topic>/status` retained: `online` on every connection, `offline` when it
stops, and a will saying `offline` if it dies without a word.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from mqttish.client import Client, ClientError, LocalProtocolError, Will
from simulators.common import (
    OFFLINE,
    ONLINE,
    STATUS_QOS,
    BrokerSettings,
    Stopper,
    TopicTemplate,
    iso_timestamp,
    on_every_connection,
)

log = logging.getLogger("simulators.sensor")

READING_TOPIC = "sensors/{site}/{room}/temperature"
SENSOR_FIELDS = frozenset({"site", "room", "sensor"})
UNIT = "°C"
GOODBYE_TIMEOUT = 5.0  # seconds to get the `offline` status out when stopping


@dataclass(frozen=True, slots=True)
class Climate:
    """How a room's temperature behaves (the model's parameters)."""

    setpoint: float = 21.0  # °C the room tends towards
    reversion: float = 0.02  # per second: how strongly the walk is pulled back to the set point
    walk: float = 0.05  # °C per square root of a second: the random walk's step
    noise: float = 0.1  # °C: measurement noise, independent for each reading
    spikes_per_hour: float = 2.0  # average number of random spikes
    spike_size: float = 8.0  # °C: a spike's typical height (75 % to 125 % of this)
    spike_half_life: float = 20.0  # seconds for a spike to decay by half

    def __post_init__(self) -> None:
        for name in ("reversion", "walk", "noise", "spikes_per_hour"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        if self.spike_half_life <= 0:
            raise ValueError("spike_half_life: must be more than 0")


class TemperatureModel:
    """The temperature of one room over time: random walk, noise, spikes; no I/O, no clock.

    `read(t)` must be called with non-decreasing times `t` (seconds on the
    sensor's own timeline); the readings depend only on the seed and those times.
    """

    __slots__ = ("_hold", "_last", "_level", "_random", "_spikes", "climate")

    def __init__(self, climate: Climate, rng: random.Random) -> None:
        self.climate = climate
        self._random = rng
        self._level = climate.setpoint  # the slow random walk, without spikes and noise
        self._last = 0.0
        self._spikes: list[tuple[float, float]] = []  # (start time, height)
        self._hold: float | None = None

    def spike(self, height: float, at: float) -> None:
        """Add a spike of `height` °C (negative: a cold draught) starting at time `at`."""
        self._spikes.append((at, height))

    def hold(self, value: float | None) -> None:
        """Report exactly `value` from now on (a scripted reading); None goes back to the model."""
        self._hold = value

    def read(self, t: float) -> float:
        climate = self.climate
        rng = self._random
        dt = max(0.0, t - self._last)
        self._last = t
        # Ornstein-Uhlenbeck step: pulled towards the set point, pushed by random steps.
        pull = 1.0 - math.exp(-climate.reversion * dt)
        self._level += (climate.setpoint - self._level) * pull
        self._level += rng.gauss(0.0, climate.walk * math.sqrt(dt))
        if rng.random() < 1.0 - math.exp(-climate.spikes_per_hour / 3600.0 * dt):
            self.spike(climate.spike_size * rng.uniform(0.75, 1.25), t)
        excursion = 0.0
        live = []
        for start, height in self._spikes:
            decayed = height * 0.5 ** ((t - start) / climate.spike_half_life)
            if abs(decayed) >= 0.01:
                live.append((start, height))
                excursion += decayed
        self._spikes = live
        value = self._level + excursion + rng.gauss(0.0, climate.noise)
        if self._hold is not None:
            value = self._hold
        return round(value, 2)


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """Something that happens to a sensor at a set time: a spike, or a held value."""

    at: float  # seconds after the sensor started
    spike: float | None = None  # °C to add, decaying as a random spike would
    hold: float | None = None  # report exactly this value...
    release: bool = False  # ...until a step with `release: true`


@dataclass(frozen=True, slots=True)
class SensorConfig:
    site: str = "home"
    room: str = "living-room"
    sensor_id: str | None = None  # the client id; default "<site>-<room>-temperature"
    topic: str = READING_TOPIC  # template: {site}, {room}, {sensor}
    interval: float = 1.0  # seconds between readings
    qos: int = 1
    retain: bool = False
    climate: Climate = field(default_factory=Climate)
    script: tuple[ScriptStep, ...] = ()
    phase: float = 0.0  # seconds before the first reading (a fleet staggers its sensors)

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval: must be more than 0 seconds")
        if self.qos not in (0, 1, 2):
            raise ValueError("qos: must be 0, 1 or 2")

    @property
    def client_id(self) -> str:
        return self.sensor_id or f"{self.site}-{self.room}-temperature"

    def reading_topic(self) -> str:
        template = TopicTemplate(self.topic, SENSOR_FIELDS)
        return template.render({"site": self.site, "room": self.room, "sensor": self.client_id})


def reading_payload(sensor: str, seq: int, value: float, timestamp: str) -> bytes:
    """The JSON a reading travels as; `value` is what dashboards chart, `seq` reveals gaps."""
    return json.dumps({"sensor": sensor, "seq": seq, "value": value, "unit": UNIT,
                       "timestamp": timestamp}, ensure_ascii=False).encode()


class StartingGun:
    """Starts many sensors' schedules at one moment, so a fleet's readings are evenly spread.

    Sensors connect one by one; with a gun they wait until all are connected
    and then count their phase from the same epoch.
    """

    __slots__ = ("_fired", "epoch")

    def __init__(self) -> None:
        self._fired = trio.Event()
        self.epoch = 0.0

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    def fire(self) -> None:
        self.epoch = trio.current_time()
        self._fired.set()

    async def wait(self) -> float:
        await self._fired.wait()
        return self.epoch


class TemperatureSensor:
    """One simulated sensor: `await nursery.start(sensor.run)` returns once it is online.

    `stop()` ends it gracefully (`offline` status, DISCONNECT); `kill()` ends it
    as a crash would, without DISCONNECT, so the broker publishes its will.
    """

    def __init__(self, config: SensorConfig, broker: BrokerSettings, rng: random.Random,
                 wall: Callable[[], float] = time.time, gun: StartingGun | None = None) -> None:
        self.config = config
        self.broker = broker
        self.model = TemperatureModel(config.climate, rng)
        self.client_id = config.client_id
        self.topic = config.reading_topic()
        self.status_topic = f"{self.topic}/status"
        self._wall = wall
        self._gun = gun
        self._stopper = Stopper()
        self._kill_scope = trio.CancelScope()
        self.client: Client | None = None
        # Counters, read by the fleet's progress line and by tests.
        self.published = 0  # readings the broker accepted (acknowledged, for QoS 1 and 2)
        self.errors = 0  # readings the broker refused
        self.skipped = 0  # scheduled readings dropped because publishing fell behind

    def __repr__(self) -> str:
        return f"TemperatureSensor({self.client_id!r} on {self.topic!r})"

    # -------------------------------------------------------------- control

    def stop(self) -> None:
        self._stopper.stop()

    def kill(self) -> None:
        self._kill_scope.cancel()

    def hold(self, value: float | None) -> None:
        """Publish exactly `value` from the next reading on (None: back to the model)."""
        self.model.hold(value)

    # -------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        will = Will(self.status_topic, OFFLINE, STATUS_QOS, retain=True)
        stopper = self._stopper
        with self._kill_scope, stopper.stoppable() as connecting:
            async with self.broker.client(self.client_id, will=will) as client:
                await client.publish(self.status_topic, ONLINE, STATUS_QOS, retain=True)
                stopper.disarm(connecting)
                self.client = client
                log.debug("%s: online, publishing to %s every %g s", self.client_id, self.topic,
                          self.config.interval)
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reannounce, client)
                    await self._publish_readings(client)
                    nursery.cancel_scope.cancel()
                with trio.move_on_after(GOODBYE_TIMEOUT) as goodbye:
                    goodbye.shield = True
                    await client.publish(self.status_topic, OFFLINE, STATUS_QOS, retain=True)
                log.debug("%s: offline after %d readings", self.client_id, self.published)

    async def _reannounce(self, client: Client) -> None:
        first = True

        async def announce() -> None:
            nonlocal first
            if not first:  # the first connection announced itself before `started()`
                await client.publish(self.status_topic, ONLINE, STATUS_QOS, retain=True)
            first = False

        await on_every_connection(client, announce)

    async def _publish_readings(self, client: Client) -> None:
        """Publish on schedule until stopped; a late reading is skipped, not bunched up."""
        config = self.config
        interval = config.interval
        script = sorted(config.script, key=lambda step: step.at)
        stopper = self._stopper
        start = trio.current_time()
        slot = 0  # the reading's number in the schedule
        if self._gun is not None:
            with stopper.stoppable():
                start = await self._gun.wait()
            # Connected after the gun went off: the next reading due, not those missed.
            slot = max(0, math.ceil((trio.current_time() - start - config.phase) / interval))
        seq = 0  # the number of readings made: without gaps, so a subscriber can spot losses
        while not stopper.stopping:
            t = config.phase + slot * interval  # the reading's time on our own timeline
            with stopper.stoppable():
                await trio.sleep_until(start + t)
            if stopper.stopping:
                return
            while script and script[0].at <= t:
                self._apply(script.pop(0))
            value = self.model.read(t)
            payload = reading_payload(self.client_id, seq, value, iso_timestamp(self._wall()))
            seq += 1
            try:
                await client.publish(self.topic, payload, config.qos, config.retain)
                self.published += 1
            except (ClientError, LocalProtocolError) as exc:
                self.errors += 1
                log.warning("%s: reading %d not published: %s", self.client_id, seq - 1, exc)
            slot += 1
            due = math.floor((trio.current_time() - start - config.phase) / interval)
            if due > slot:  # publishing took longer than the interval: skip, do not bunch up
                self.skipped += due - slot
                slot = due

    def _apply(self, step: ScriptStep) -> None:
        if step.spike is not None:
            self.model.spike(step.spike, step.at)
            log.info("%s: scripted spike of %+g %s", self.client_id, step.spike, UNIT)
        if step.hold is not None:
            self.model.hold(step.hold)
            log.info("%s: scripted reading %g %s", self.client_id, step.hold, UNIT)
        if step.release:
            self.model.hold(None)
