"""The threshold monitor: turns temperature readings into `high` / `low` / `normal` events.

Theory of operation: `ThresholdDetector` is sans-IO. It keeps one `Level` per
room and is told each reading; it answers with the room's new level when the
level changes, and with the level of a room it hears from for the first time
(so actuators that start with the monitor learn the state of every room).
Retained readings (sent on subscribe, and possibly hours old) are ignored.
Hysteresis keeps a reading that hovers near a threshold from flapping: a room
that went `high` at 26.0 °C stays high until it drops below 26.0 - 0.5.

`Monitor` subscribes to every sensor with one wildcard filter made from the
readings' topic template, and publishes each change, QoS 1 and not retained
(an event happens once), to `events/temperature/<level>/<site>/<room>` with a
JSON body that also names the room, so both `events/temperature/high/#` (every
high event) and `events/temperature/+/<site>/<room>` (one room) work.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import trio

from mqttish.client import Client, Message
from mqttish.log_text import clip
from simulators.common import (
    BrokerSettings,
    Stopper,
    TopicTemplate,
    iso_timestamp,
    publish,
    serve_subscription,
)
from simulators.sensor import READING_TOPIC, SENSOR_FIELDS

log = logging.getLogger("simulators.monitor")

EVENT_TOPIC = "events/temperature/{level}/{site}/{room}"
EVENT_FIELDS = frozenset({"level", "site", "room"})
EVENT_QOS = 1


class Level(Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """`high` at or above `high`, `low` at or below `low` (None: no low events)."""

    high: float = 26.0
    low: float | None = None
    hysteresis: float = 0.5  # °C a reading must come back past a threshold to end that level

    def __post_init__(self) -> None:
        if self.hysteresis < 0:
            raise ValueError("hysteresis: must not be negative")
        if self.low is not None and self.low + self.hysteresis >= self.high - self.hysteresis:
            raise ValueError("low + hysteresis must be below high - hysteresis")

    def classify(self, value: float, previous: Level | None) -> Level:
        if value >= self.high or (previous is Level.HIGH and value > self.high - self.hysteresis):
            return Level.HIGH
        low = self.low
        if low is not None and (value <= low or (previous is Level.LOW
                                                 and value < low + self.hysteresis)):
            return Level.LOW
        return Level.NORMAL

    def boundary(self, level: Level, previous: Level | None) -> float:
        """The threshold a reading crossed to reach `level` (reported in the event)."""
        if level is Level.HIGH:
            return self.high
        if level is Level.LOW:
            assert self.low is not None
            return self.low
        if previous is Level.LOW:
            assert self.low is not None
            return self.low + self.hysteresis
        return self.high - self.hysteresis if previous is Level.HIGH else self.high


@dataclass(frozen=True, slots=True)
class Change:
    """A room's level changed (or was heard for the first time: `previous` is None)."""

    site: str
    room: str
    level: Level
    previous: Level | None
    value: float
    threshold: float


class ThresholdDetector:
    """Per-room levels with hysteresis: readings in, level changes out."""

    __slots__ = ("levels", "thresholds")

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.levels: dict[tuple[str, str], Level] = {}

    def reading(self, site: str, room: str, value: float) -> Change | None:
        previous = self.levels.get((site, room))
        level = self.thresholds.classify(value, previous)
        if level is previous:
            return None
        self.levels[site, room] = level
        return Change(site, room, level, previous, value,
                      self.thresholds.boundary(level, previous))


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    thresholds: Thresholds = Thresholds()
    readings: str = READING_TOPIC  # template of the readings' topics: needs {site} and {room}
    events: str = EVENT_TOPIC  # template of the events' topics: {level}, {site}, {room}
    client_id: str = "temperature-monitor"


def parse_reading(payload: bytes) -> tuple[float, str | None]:
    """The temperature and sensor of a reading: our JSON, or a bare number from anything else."""
    data = json.loads(payload)
    sensor = None
    if isinstance(data, dict):
        sensor = data.get("sensor")
        data = data["value"]
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise ValueError(f"not a number: {data!r}")
    return float(data), sensor if isinstance(sensor, str) else None


def event_payload(change: Change, timestamp: str, sensor: str | None) -> bytes:
    return json.dumps({
        "event": change.level.value, "site": change.site, "room": change.room,
        "value": change.value, "threshold": change.threshold,
        "previous": change.previous.value if change.previous else None,
        "sensor": sensor, "timestamp": timestamp,
    }).encode()


class Monitor:
    """Subscribes to every sensor's readings and publishes level changes as events."""

    def __init__(self, config: MonitorConfig, broker: BrokerSettings,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.broker = broker
        self.detector = ThresholdDetector(config.thresholds)
        self._readings = TopicTemplate(config.readings, SENSOR_FIELDS).require("site", "room")
        self._events = TopicTemplate(config.events, EVENT_FIELDS).require("level", "site", "room")
        self._wall = wall
        self._stopper = Stopper()
        self._unreadable: set[str] = set()  # topics already warned about
        self.events = 0  # events published

    def stop(self) -> None:
        self._stopper.stop()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        topic_filter = self._readings.filter()
        thresholds = self.config.thresholds
        with self._stopper.stoppable() as connecting:
            async with self.broker.client(self.config.client_id, persistent=True) as client:
                self._stopper.disarm(connecting)
                log.info("watching %s: high at %g, %s, hysteresis %g", topic_filter,
                         thresholds.high, "no low threshold" if thresholds.low is None
                         else f"low at {thresholds.low:g}", thresholds.hysteresis)

                async def subscribed() -> None:
                    task_status.started()

                async def handle(message: Message) -> None:
                    await self._handle(client, message)

                await serve_subscription(client, topic_filter, handle, self._stopper, subscribed,
                                         keep=True)

    async def _handle(self, client: Client, message: Message) -> None:
        fields = self._readings.parse(message.topic)
        if fields is None or message.retain:
            return  # a retained reading is the last one the broker kept: it may be hours old
        try:
            value, sensor = parse_reading(message.payload)
        except (ValueError, KeyError, TypeError):
            if message.topic not in self._unreadable:
                self._unreadable.add(message.topic)
                log.warning("ignoring %s: payload %r has no temperature", clip(message.topic),
                            message.payload[:60])
            return
        change = self.detector.reading(fields["site"], fields["room"], value)
        if change is None:
            return
        topic = self._events.render({"level": change.level.value, "site": change.site,
                                     "room": change.room})
        sensor = fields.get("sensor") or sensor
        payload = event_payload(change, iso_timestamp(self._wall()), sensor)
        if change.previous is None:
            log.info("%s/%s: %.2f, %s", change.site, change.room, value, change.level.value)
        else:
            log.info("%s/%s: %.2f crossed %g: %s -> %s", change.site, change.room, value,
                     change.threshold, change.previous.value, change.level.value)
        await publish(client, self.config.client_id, topic, payload, EVENT_QOS)
        self.events += 1

