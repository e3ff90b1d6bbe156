"""A simulated fan or heater: reacts to its room's temperature events, publishes its state.

An actuator knows its room and nothing else: it subscribes to
`events/temperature/+/<site>/<room>` (QoS 1, persistent session, so events
sent while it was briefly away still arrive) and switches on when the level
calls for it (a fan on `high`, a heater on `low`) and off on any other level.
Its state is retained at `actuators/<site>/<room>/<kind>`, so whoever
subscribes later (a dashboard) sees it at once, and `<that topic>/status`
says `online` / `offline` as a sensor's status does, with a will.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import trio

from mqttish.client import Client, Message, Will
from mqttish.log_text import clip
from simulators.common import (
    OFFLINE,
    ONLINE,
    STATUS_QOS,
    BrokerSettings,
    Stopper,
    TopicTemplate,
    iso_timestamp,
    on_every_connection,
    publish,
    serve_subscription,
)
from simulators.monitor import EVENT_FIELDS, EVENT_TOPIC, Level

log = logging.getLogger("simulators.actuator")

STATE_TOPIC = "actuators/{site}/{room}/{kind}"
STATE_FIELDS = frozenset({"site", "room", "kind"})
STATE_QOS = 1
GOODBYE_TIMEOUT = 5.0


class Kind(Enum):
    FAN = "fan"
    HEATER = "heater"


SWITCHED_ON_BY = {Kind.FAN: Level.HIGH, Kind.HEATER: Level.LOW}


@dataclass(frozen=True, slots=True)
class ActuatorConfig:
    site: str = "home"
    room: str = "living-room"
    kind: Kind = Kind.FAN
    events: str = EVENT_TOPIC  # template of the monitor's events: {level}, {site}, {room}
    state: str = STATE_TOPIC  # template of our state topic: {site}, {room}, {kind}
    client_id: str | None = None  # default "<site>-<room>-<kind>"

    @property
    def actuator_id(self) -> str:
        return self.client_id or f"{self.site}-{self.room}-{self.kind.value}"


def state_payload(on: bool, event: str | None, temperature: float | None,
                  timestamp: str) -> bytes:
    """`state` for people, `value` (1 / 0) for charts, and what caused the switch."""
    return json.dumps({"state": "on" if on else "off", "value": int(on), "event": event,
                       "temperature": temperature, "timestamp": timestamp}).encode()


class Actuator:
    """One fan or heater: `await nursery.start(actuator.run)` returns once it listens."""

    def __init__(self, config: ActuatorConfig, broker: BrokerSettings,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.broker = broker
        self.actuator_id = config.actuator_id
        room = {"site": config.site, "room": config.room}
        self.events_filter = TopicTemplate(config.events, EVENT_FIELDS).require(
            "level", "site", "room").filter(room)
        self.state_topic = TopicTemplate(config.state, STATE_FIELDS).render(
            {**room, "kind": config.kind.value})
        self.status_topic = f"{self.state_topic}/status"
        self.on = False
        self.switches = 0  # times the state changed, for tests and the log
        self._last: tuple[str | None, float | None] = (None, None)  # event, temperature
        self._wall = wall
        self._stopper = Stopper()

    def stop(self) -> None:
        self._stopper.stop()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        will = Will(self.status_topic, OFFLINE, STATUS_QOS, retain=True)
        with self._stopper.stoppable() as connecting:
            async with self.broker.client(self.actuator_id, will=will,
                                          persistent=True) as client:
                self._stopper.disarm(connecting)
                async with trio.open_nursery() as nursery:

                    async def subscribed() -> None:
                        # Events queued in a resumed session are handled by now, so the
                        # first state announced is already up to date.
                        nursery.start_soon(self._announce_on_every_connection, client)
                        log.info("%s: %s, listening to %s", self.actuator_id, self._word(),
                                 self.events_filter)
                        task_status.started()

                    async def handle(message: Message) -> None:
                        await self._handle(client, message)

                    await serve_subscription(client, self.events_filter, handle, self._stopper,
                                             subscribed, keep=True)
                    nursery.cancel_scope.cancel()
                with trio.move_on_after(GOODBYE_TIMEOUT) as goodbye:
                    goodbye.shield = True
                    await self._publish_status(client, OFFLINE)

    async def _announce_on_every_connection(self, client: Client) -> None:
        async def announce() -> None:
            await self._publish_status(client, ONLINE)
            await self._publish_state(client)

        await on_every_connection(client, announce)

    async def _handle(self, client: Client, message: Message) -> None:
        try:
            event = json.loads(message.payload)
            level = Level(event["event"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s: ignoring %s: not an event: %r", self.actuator_id, clip(message.topic),
                        message.payload[:60])
            return
        on = level is SWITCHED_ON_BY[self.config.kind]
        temperature = event.get("value")
        self._last = (level.value, temperature if isinstance(temperature, int | float) else None)
        if on == self.on:
            return
        self.on = on
        self.switches += 1
        log.info("%s: %s (%s event at %s)", self.actuator_id, self._word(), level.value,
                 temperature)
        await self._publish_state(client)

    async def _publish_state(self, client: Client) -> None:
        event, temperature = self._last
        payload = state_payload(self.on, event, temperature, iso_timestamp(self._wall()))
        await publish(client, self.actuator_id, self.state_topic, payload, STATE_QOS, retain=True)

    async def _publish_status(self, client: Client, status: bytes) -> None:
        await publish(client, self.actuator_id, self.status_topic, status, STATUS_QOS,
                      retain=True)

    def _word(self) -> str:
        return f"{self.config.kind.value} {'on' if self.on else 'off'}"
