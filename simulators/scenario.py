"""Scenario files: a whole example system (sensors, a monitor, actuators) in one YAML file.

A scenario only says which devices exist and how they behave; each device
is started as the standalone simulator would be, with its own connection,
and finds the others through topics alone. Loading is strict, like the
broker's configuration: an unknown key or a wrong type names the key path
(`sensors[2].climate.setpiont: unknown key (did you mean 'setpoint'?)`).

Randomness is reproducible: every sensor draws from its own
`random.Random(f"{seed}:{sensor id}")`, so a sensor's readings depend only on
the seed and its id, whatever order the devices start in. A run without a
seed picks one and logs it, so an interesting run can be repeated.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import yaml

from mqttish.typed_yaml import SchemaError, build
from simulators.actuator import Actuator, ActuatorConfig
from simulators.common import BrokerSettings
from simulators.monitor import EVENT_TOPIC, Monitor, MonitorConfig, Thresholds
from simulators.sensor import READING_TOPIC, SensorConfig, TemperatureSensor

log = logging.getLogger("simulators.scenario")

SCENARIO_DIR = Path(__file__).parent / "scenarios"
GRACE = 10.0  # seconds for devices to say goodbye when the scenario ends


class ScenarioError(Exception):
    """A scenario file that cannot be run, with the path of the offending key."""


@dataclass(frozen=True, slots=True)
class MonitorSpec:
    """The `monitor:` section: thresholds flat, as people write them."""

    high: float = 26.0
    low: float | None = None
    hysteresis: float = 0.5
    readings: str = READING_TOPIC
    events: str = EVENT_TOPIC
    client_id: str = "temperature-monitor"

    def __post_init__(self) -> None:
        self.config()  # the thresholds' own checks, reported at load time

    def config(self) -> MonitorConfig:
        return MonitorConfig(Thresholds(self.high, self.low, self.hysteresis), self.readings,
                             self.events, self.client_id)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "scenario"
    description: str = ""
    site: str = "home"  # the default site of every device
    seed: int | None = None
    duration: float | None = None  # seconds; None: until Ctrl-C
    sensors: tuple[SensorConfig, ...] = ()
    monitor: MonitorSpec | None = None
    actuators: tuple[ActuatorConfig, ...] = ()


# ------------------------------------------------------------------ loading


def scenario_path(name: str) -> Path:
    """A file path as given, or the name of a bundled scenario (`building`)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return SCENARIO_DIR / f"{name}.yaml"


def bundled_scenarios() -> list[tuple[str, str]]:
    """(name, first line of the description) of every scenario shipped in simulators/scenarios."""
    found = []
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        scenario = load_scenario(path)
        found.append((path.stem, scenario.description.strip().split("\n")[0]))
    return found


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    return parse_scenario(text, path.stem, str(path))


def parse_scenario(text: str, name: str = "scenario", source: str = "<scenario>") -> Scenario:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: expected a mapping of scenario keys")
    raw = dict(raw)
    site = raw.get("site", "home")
    # Every device belongs to the scenario's site unless it says otherwise.
    defaults = raw.pop("sensor_defaults", None) or {}
    if not isinstance(defaults, dict):
        raise ScenarioError(f"{source}: sensor_defaults: expected a mapping")
    raw["sensors"] = [_merge({"site": site, **defaults}, sensor)
                      for sensor in raw.get("sensors") or []]
    raw["actuators"] = [_merge({"site": site}, actuator) for actuator in raw.get("actuators") or []]
    raw.setdefault("name", name)
    try:
        scenario = build(Scenario, raw)
    except SchemaError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    ids = [sensor.client_id for sensor in scenario.sensors]
    ids += [actuator.actuator_id for actuator in scenario.actuators]
    duplicates = sorted({client_id for client_id in ids if ids.count(client_id) > 1})
    if duplicates:
        raise ScenarioError(f"{source}: two devices would share the client id {duplicates[0]!r} "
                            "(give one a sensor_id / client_id)")
    return scenario


def _merge(base: dict[str, Any], override: Any) -> Any:
    """`override` on top of `base`, mapping by mapping (a sensor's climate on the defaults')."""
    if not isinstance(override, dict):
        return override  # reported by `build` with its path
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


# ------------------------------------------------------------------ running


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    """The summary printed at the end, on stdout like the other commands' summaries."""

    name: str
    seed: int
    sensors: int
    monitor: bool
    actuators: int
    seconds: float
    readings: int  # published by the sensors
    events: int  # published by the monitor
    switches: int  # times an actuator switched on or off

    def lines(self) -> list[str]:
        return [
            "scenario summary:",
            f"  scenario     {self.name} (seed {self.seed})",
            f"  devices      {self.sensors} sensors, {'a' if self.monitor else 'no'} monitor, "
            f"{self.actuators} actuators",
            f"  duration     {self.seconds:.1f} s",
            f"  readings     {self.readings}",
            f"  events       {self.events}",
            f"  switches     {self.switches}",
        ]


class ScenarioRun:
    """The running devices of one scenario; `await nursery.start(run.run)` starts them all.

    Tests reach into it: `run.sensor("kitchen").hold(30.0)`, `.kill()`.
    """

    def __init__(self, scenario: Scenario, broker: BrokerSettings, seed: int,
                 wall: Callable[[], float] = time.time) -> None:
        self.scenario = scenario
        self.seed = seed
        self.sensors = [TemperatureSensor(config, broker,
                                          random.Random(f"{seed}:{config.client_id}"), wall)
                        for config in scenario.sensors]
        spec = scenario.monitor
        self.monitor = None if spec is None else Monitor(spec.config(), broker, wall)
        self.actuators = [Actuator(config, broker, wall) for config in scenario.actuators]
        self._stopped = trio.Event()

    def sensor(self, name: str) -> TemperatureSensor:
        """The sensor with this client id, or the only sensor in the room of that name."""
        found = [sensor for sensor in self.sensors
                 if name in (sensor.client_id, sensor.config.room)]
        if len(found) != 1:
            raise KeyError(f"no single sensor {name!r} in scenario {self.scenario.name!r}")
        return found[0]

    def stop(self) -> None:
        self._stopped.set()

    async def _cancel_when_stopped(self, scope: trio.CancelScope) -> None:
        """A stop while devices are still connecting (the broker is down) ends the wait."""
        await self._stopped.wait()
        scope.cancel()

    async def run(self, duration: float | None = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> ScenarioReport:
        """Start actuators, then the monitor, then sensors (so no first event is missed)."""
        scenario = self.scenario
        if duration is None:
            duration = scenario.duration
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as starting:
                nursery.start_soon(self._cancel_when_stopped, starting)
                for actuator in self.actuators:
                    await nursery.start(actuator.run)
                if self.monitor is not None:
                    await nursery.start(self.monitor.run)
                for sensor in self.sensors:
                    await nursery.start(sensor.run)
            if not self._stopped.is_set():
                log.info("scenario %r running: %d sensors, %s, %d actuators, seed %d, %s",
                         scenario.name, len(self.sensors),
                         "a monitor" if self.monitor else "no monitor", len(self.actuators),
                         self.seed, f"for {duration:g} s" if duration else "until Ctrl-C")
            task_status.started()
            with trio.move_on_after(duration or math.inf):
                await self._stopped.wait()
            self._stopped.set()
            for sensor in self.sensors:
                sensor.stop()
            if self.monitor is not None:
                self.monitor.stop()
            for actuator in self.actuators:
                actuator.stop()
            nursery.cancel_scope.deadline = trio.current_time() + GRACE
        return ScenarioReport(
            name=scenario.name, seed=self.seed, sensors=len(self.sensors),
            monitor=self.monitor is not None, actuators=len(self.actuators),
            seconds=trio.current_time() - started,
            readings=sum(sensor.published for sensor in self.sensors),
            events=self.monitor.events if self.monitor else 0,
            switches=sum(actuator.switches for actuator in self.actuators))
