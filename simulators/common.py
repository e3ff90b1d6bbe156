"""What every simulator shares: how to reach the broker, topic templates, timestamps.

Every simulated device is an ordinary `mqttish.client.Client` with
`reconnect=True`: a broker that is down or restarts costs log lines and
backoff, never a traceback. Devices that must not miss messages (monitor,
actuators, workers) keep a persistent session, so what was published while
they were away is delivered when they return.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from mqttish.client import (
    MQTT_3_1_1,
    MQTT_5,
    Backoff,
    Client,
    ClientError,
    ClientOptions,
    ClientState,
    LocalProtocolError,
    Message,
    Properties,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES

log = logging.getLogger("simulators")

# Devices retry at most every 5 s: a restarted broker sees its simulators back quickly.
OPTIONS = ClientOptions(backoff=Backoff(maximum=5.0))
SESSION_EXPIRY = 3600  # seconds a persistent simulator's session outlives its connection
STATUS_QOS = 1
ONLINE = b"online"
OFFLINE = b"offline"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the broker is and how to talk to it: one instance serves every simulator."""

    host: str = "localhost"
    port: int = 1883
    version: int = MQTT_5
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    options: ClientOptions = OPTIONS

    def client(self, client_id: str, *, will: Will | None = None, persistent: bool = False,
               resume: bool = True, options: ClientOptions | None = None) -> Client:
        """A reconnecting client; `persistent` keeps its session across connections.

        A persistent client also resumes the session it had before this
        program started (clean start 0), so a restarted actuator still gets
        the events published while it was gone, unless `resume` is off (MQTT 5):
        then the program starts afresh and only its own reconnects resume.
        """
        properties = NO_PROPERTIES
        clean_start = not persistent
        if persistent and self.version == MQTT_5:
            properties = Properties(session_expiry_interval=SESSION_EXPIRY)
            clean_start = not resume
        return Client(
            self.host, self.port, client_id=client_id, version=self.version,
            clean_start=clean_start, keepalive=self.keepalive, will=will,
            username=self.username, password=self.password, properties=properties,
            reconnect=True, options=options or self.options,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


VERSIONS = {"311": MQTT_3_1_1, "mqttv311": MQTT_3_1_1, "5": MQTT_5, "mqttv5": MQTT_5}


class TemplateError(ValueError):
    """A topic template that cannot be used: says which placeholder or level is wrong."""


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class TopicTemplate:
    """A topic with `{name}` placeholders, each a whole level: `sensors/{site}/{room}/temperature`.

    Because placeholders are whole levels, one template gives the topic a
    device publishes to (`render`), the filter a consumer subscribes to
    (`filter`, placeholders become `+`) and the values back from a topic
    (`parse`). That is how the monitor finds the room of a reading without
    knowing anything about the sensor that sent it.
    """

    __slots__ = ("_levels", "names", "template")

    def __init__(self, template: str, allowed: frozenset[str]) -> None:
        if not template:
            raise TemplateError("a topic template must not be empty")
        self.template = template
        levels: list[str | None] = []  # a literal level, or None for a placeholder
        names: list[str] = []
        for level in template.split("/"):
            match = _PLACEHOLDER.fullmatch(level)
            if match:
                name = match.group(1)
                if name not in allowed:
                    raise TemplateError(f"topic template {template!r}: unknown placeholder "
                                        f"{{{name}}} (use {_names(allowed)})")
                levels.append(None)
                names.append(name)
            elif "{" in level or "}" in level:
                raise TemplateError(f"topic template {template!r}: a placeholder must be a "
                                    f"whole topic level, like a/{{room}}/b, not {level!r}")
            elif "+" in level or "#" in level:
                raise TemplateError(f"topic template {template!r}: no wildcards in a topic")
            else:
                levels.append(level)
        self._levels = tuple(levels)
        self.names = tuple(names)

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"

    def require(self, *names: str) -> TopicTemplate:
        """Check that the template has these placeholders (a consumer needs them)."""
        missing = [name for name in names if name not in self.names]
        if missing:
            raise TemplateError(f"topic template {self.template!r} needs "
                                f"{_names(frozenset(missing))}")
        return self

    def render(self, values: Mapping[str, str]) -> str:
        return self.template.format_map(values)

    def filter(self, values: Mapping[str, str] | None = None) -> str:
        """The subscription filter: given placeholders filled in, the others `+`."""
        values = values or {}
        names = iter(self.names)
        return "/".join(level if level is not None else values.get(next(names), "+")
                        for level in self._levels)

    def parse(self, topic: str) -> dict[str, str] | None:
        """The placeholder values of `topic`, or None if it does not fit the template."""
        levels = topic.split("/")
        if len(levels) != len(self._levels):
            return None
        values: dict[str, str] = {}
        names = iter(self.names)
        for expected, actual in zip(self._levels, levels, strict=True):
            if expected is None:
                values[next(names)] = actual
            elif expected != actual:
                return None
        return values


def _names(names: frozenset[str]) -> str:
    return ", ".join(f"{{{name}}}" for name in sorted(names))


def iso_timestamp(seconds: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z, the form dashboards and people both read."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def on_every_connection(client: Client, announce: Callable[[], Awaitable[None]]) -> None:
    """Call `announce` once per connection, as soon as it is up.

    Retained state (an `online` status, an actuator's state) lives in the
    broker; a broker that restarted without persistence has forgotten it, so
    a device says it again each time it connects.
    """
    while client.state is not ClientState.CLOSED:
        await client.wait_connected()
        await announce()
        await client.wait_disconnected()


class Stopper:
    """Lets a component finish what it is doing and end gracefully when asked.

    `stop()` cancels only the scopes entered with `stoppable()` (waiting for
    the next reading, for the next message), never a publish that is
    waiting for its acknowledgement, so counts of what was published stay exact.
    """

    __slots__ = ("_scopes", "stopping")

    def __init__(self) -> None:
        self.stopping = False
        self._scopes: set[trio.CancelScope] = set()

    def stop(self) -> None:
        self.stopping = True
        for scope in self._scopes:
            scope.cancel()

    @contextmanager
    def stoppable(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            if self.stopping:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def disarm(self, scope: trio.CancelScope) -> None:
        """From now on `stop()` leaves `scope` alone.

        A device wraps its whole life in a stoppable scope and disarms it once
        connected: stopped while still waiting for the broker, it just ends
        (there is nobody to say goodbye to); stopped later, it ends gracefully.
        """
        self._scopes.discard(scope)


async def publish(client: Client, owner: str, topic: str, payload: bytes, qos: int = 1,
                  retain: bool = False) -> None:
    """Publish; a refusal costs a warning, not the device (a monitor outlives one bad topic)."""
    try:
        await client.publish(topic, payload, qos, retain)
    except (ClientError, LocalProtocolError) as exc:
        log.warning("%s: could not publish to %s: %s", owner, topic, exc)


async def serve_subscription(client: Client, topic_filter: str,
                             handle: Callable[[Message], Awaitable[None]], stopper: Stopper,
                             subscribed: Callable[[], Awaitable[None]], *,
                             manual_ack: bool = False, keep: bool = False) -> None:
    """Subscribe at QoS 1 and hand each message to `handle` until `stopper` stops it.

    `subscribed()` is called once the broker has granted the subscription
    and the messages a resumed session had queued (they arrive before the
    SUBACK) are handled, so that what it announces is up to date. Stopping
    ends the wait for the next message, never the handling of one, whose
    publishes finish. With `manual_ack`, `handle` acknowledges each message.
    With `keep` (a device whose session outlives the program), stopping
    leaves the subscription in the session, so what is published while the
    program is not running waits for its next run, as after a `kill -9`.
    """
    with stopper.stoppable() as subscribing:
        async with client.subscription(topic_filter, qos=1, manual_ack=manual_ack,
                                       keep=keep) as messages:
            stopper.disarm(subscribing)
            while True:
                try:
                    message = messages.receive_nowait()
                except trio.WouldBlock:
                    break
                await handle(message)
            await subscribed()
            while True:
                with stopper.stoppable() as waiting:
                    message = await messages.receive()
                if waiting.cancelled_caught:
                    return
                await handle(message)
