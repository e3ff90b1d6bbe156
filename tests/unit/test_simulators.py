"""The simulators' sans-IO parts: temperature model, threshold detector, templates, scenarios."""

import itertools
import random
import statistics
from pathlib import Path

import pytest

from simulators.cli import main as simulators_main
from simulators.common import TemplateError, TopicTemplate
from simulators.fleet import FleetConfig
from simulators.monitor import Level, ThresholdDetector, Thresholds, parse_reading
from simulators.scenario import ScenarioError, load_scenario, parse_scenario, scenario_path
from simulators.sensor import SENSOR_FIELDS, Climate, TemperatureModel

QUIET = Climate(setpoint=20.0, walk=0.0, noise=0.0, spikes_per_hour=0.0)


def readings(climate: Climate, seed: int, count: int = 50, interval: float = 2.0) -> list[float]:
    model = TemperatureModel(climate, random.Random(seed))
    return [model.read(i * interval) for i in range(count)]


# ------------------------------------------------------------------ temperature model


def test_same_seed_same_readings() -> None:
    climate = Climate(spikes_per_hour=60.0)
    assert readings(climate, 7) == readings(climate, 7)
    assert readings(climate, 7) != readings(climate, 8)


def test_readings_wander_around_the_set_point() -> None:
    values = readings(Climate(setpoint=21.0, spikes_per_hour=0.0), 1, count=2000)
    assert 20.0 < statistics.mean(values) < 22.0
    assert statistics.pstdev(values) > 0.05  # a walk with noise, not a constant
    assert len(set(values)) > 100


def test_a_spike_decays_with_its_half_life() -> None:
    model = TemperatureModel(QUIET, random.Random(0))
    model.spike(8.0, at=10.0)
    assert model.read(10.0) == 28.0
    assert model.read(10.0 + QUIET.spike_half_life) == 24.0
    assert model.read(10.0 + 20 * QUIET.spike_half_life) == 20.0


def test_random_spikes_happen_at_the_configured_rate() -> None:
    climate = Climate(setpoint=20.0, walk=0.0, noise=0.0, spikes_per_hour=60.0,
                      spike_size=10.0, spike_half_life=1.0)
    values = readings(climate, 3, count=3600, interval=1.0)  # an hour, one reading a second
    spikes = sum(1 for before, after in itertools.pairwise(values)
                 if after - before > 5)
    assert 40 <= spikes <= 80


def test_hold_reports_exactly_the_scripted_value_until_released() -> None:
    model = TemperatureModel(QUIET, random.Random(0))
    model.hold(30.5)
    assert [model.read(t) for t in (1, 2, 3)] == [30.5, 30.5, 30.5]
    model.hold(None)
    assert model.read(4) == 20.0


def test_climate_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="noise"):
        Climate(noise=-1)


# ------------------------------------------------------------------ threshold detector


def levels(detector: ThresholdDetector, values: list[float]) -> list[str | None]:
    changes = [detector.reading("hq", "kitchen", value) for value in values]
    return [change.level.value if change else None for change in changes]


def test_first_reading_announces_the_level_then_only_crossings() -> None:
    detector = ThresholdDetector(Thresholds(high=26.0, hysteresis=0.5))
    assert levels(detector, [21.0, 22.0, 26.0, 27.0, 25.4, 24.0]) == [
        "normal", None, "high", None, "normal", None]


def test_hysteresis_keeps_readings_near_the_threshold_from_flapping() -> None:
    detector = ThresholdDetector(Thresholds(high=26.0, hysteresis=0.5))
    values = [25.9, 26.0, 25.6, 26.1, 25.51, 25.9, 25.5, 25.9, 25.99]
    assert levels(detector, values) == [
        "normal", "high", None, None, None, None, "normal", None, None]


def test_low_threshold_and_a_jump_across_both() -> None:
    detector = ThresholdDetector(Thresholds(high=26.0, low=16.0, hysteresis=0.5))
    assert levels(detector, [20.0, 16.0, 16.4, 16.5, 30.0, 10.0]) == [
        "normal", "low", None, "normal", "high", "low"]


def test_change_reports_the_boundary_crossed() -> None:
    detector = ThresholdDetector(Thresholds(high=26.0, low=16.0, hysteresis=0.5))
    detector.reading("hq", "lab", 27.0)
    change = detector.reading("hq", "lab", 25.0)
    assert change is not None
    assert (change.level, change.previous, change.threshold) == (Level.NORMAL, Level.HIGH, 25.5)


def test_rooms_are_independent() -> None:
    detector = ThresholdDetector(Thresholds(high=26.0))
    detector.reading("hq", "a", 30.0)
    change = detector.reading("hq", "b", 20.0)
    assert change is not None and change.level is Level.NORMAL
    assert detector.levels == {("hq", "a"): Level.HIGH, ("hq", "b"): Level.NORMAL}


def test_thresholds_must_leave_room_for_hysteresis() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        Thresholds(high=20.0, low=19.5, hysteresis=0.5)


@pytest.mark.parametrize(("payload", "expected"), [
    (b'{"value": 21.5, "sensor": "s1"}', (21.5, "s1")),
    (b'{"value": 21}', (21.0, None)),
    (b"22.25", (22.25, None)),
])
def test_readings_are_our_json_or_a_bare_number(payload: bytes, expected: object) -> None:
    assert parse_reading(payload) == expected


@pytest.mark.parametrize("payload", [b"hot", b'{"value": "21"}', b'{"temp": 1}', b"true"])
def test_unreadable_readings_are_refused(payload: bytes) -> None:
    with pytest.raises((ValueError, KeyError)):
        parse_reading(payload)


# ------------------------------------------------------------------ topic templates


def test_template_renders_filters_and_parses() -> None:
    template = TopicTemplate("sensors/{site}/{room}/temperature", SENSOR_FIELDS)
    assert template.render({"site": "hq", "room": "lab"}) == "sensors/hq/lab/temperature"
    assert template.filter() == "sensors/+/+/temperature"
    assert template.filter({"site": "hq"}) == "sensors/hq/+/temperature"
    assert template.parse("sensors/hq/lab/temperature") == {"site": "hq", "room": "lab"}
    assert template.parse("sensors/hq/lab/humidity") is None
    assert template.parse("sensors/hq/lab/temperature/status") is None


@pytest.mark.parametrize(("template", "message"), [
    ("sensors/room-{room}/t", "whole topic level"),
    ("sensors/{floor}/t", "unknown placeholder {floor}"),
    ("sensors/+/t", "no wildcards"),
    ("", "must not be empty"),
])
def test_bad_templates_say_what_is_wrong(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        TopicTemplate(template, SENSOR_FIELDS)


def test_a_consumer_needs_the_placeholders_it_parses() -> None:
    with pytest.raises(TemplateError, match=r"needs \{room\}"):
        TopicTemplate("sensors/{site}/temperature", SENSOR_FIELDS).require("site", "room")


# ------------------------------------------------------------------ scenarios


def test_the_building_scenario_loads() -> None:
    scenario = load_scenario(scenario_path("building"))
    rooms = [sensor.room for sensor in scenario.sensors]
    assert rooms == ["kitchen", "office", "server-room", "basement"]
    kitchen = scenario.sensors[0]
    assert kitchen.site == "hq" and kitchen.interval == 2.0 and kitchen.retain
    assert kitchen.climate.setpoint == 23.0  # its own
    assert kitchen.climate.spike_size == 7.0  # from sensor_defaults
    assert kitchen.script[0].spike == 8.0
    assert scenario.monitor is not None and scenario.monitor.low == 16.0
    assert [a.kind.value for a in scenario.actuators] == ["fan", "fan", "fan", "heater"]


@pytest.mark.parametrize(("text", "message"), [
    ("sensors:\n  - room: a\n    climate: {setpiont: 20}\n",
     "sensors[0].climate.setpiont: unknown key (did you mean 'setpoint'?)"),
    ("sensors:\n  - room: a\n    interval: fast\n",
     "sensors[0].interval: expected number, got 'fast'"),
    ("sensors:\n  - room: a\n    interval: 0\n", "sensors[0].interval: must be more than 0"),
    ("actuators:\n  - {room: a, kind: fridge}\n",
     "actuators[0].kind: expected one of 'fan', 'heater', got 'fridge'"),
    ("monitor: {high: 20, low: 19.8}\n", "monitor.low + hysteresis must be below"),
    ("sensors:\n  - room: a\n  - room: a\n", "share the client id 'home-a-temperature'"),
    ("duraton: 5\n", "duraton: unknown key (did you mean 'duration'?)"),
    ("- a\n", "expected a mapping"),
])
def test_scenario_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=r"^test\.yaml: ") as caught:
        parse_scenario(text, "test", "test.yaml")
    assert message in str(caught.value)


def test_scenario_path_finds_bundled_names_and_files(tmp_path: Path) -> None:
    assert scenario_path("building").name == "building.yaml"
    own = tmp_path / "mine.yaml"
    assert scenario_path(str(own)) == own


# ------------------------------------------------------------------ fleet pacing


def test_fleet_spreads_its_sensors_evenly_over_the_interval() -> None:
    config = FleetConfig(sensors=4, rate=8.0)
    sensors = [config.sensor(n) for n in range(1, 5)]
    assert [s.interval for s in sensors] == [0.5] * 4  # each sensor: 2 readings a second
    assert [s.phase for s in sensors] == [0.0, 0.125, 0.25, 0.375]
    assert len({s.client_id for s in sensors}) == 4


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize("command", [
    "sensor", "monitor", "actuator", "fleet", "scenario", "jobs", "orders", "order-worker"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        simulators_main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "-h HOST, --host HOST" in out and "-p PORT, --port PORT" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["sensor", "--qos", "3"], "simulators sensor: argument -q/--qos: invalid choice"),
    (["sensor", "-t", "a/{floor}"], "simulators sensor: topic template 'a/{floor}'"),
    (["monitor", "--high", "20", "--low", "19.9"], "simulators monitor: low + hysteresis"),
    (["fleet", "-n", "0"], "simulators fleet: sensors: must be at least 1"),
    (["scenario", "nonexistent"], "simulators scenario: cannot read"),
    (["jobs", "-V", "311"], "simulators jobs: the jobs example needs MQTT 5"),
    (["orders", "--workers", "1"], "simulators orders: killing the only worker"),
    (["launch"], "simulators: argument COMMAND: invalid choice: 'launch'"),
])
def test_bad_command_lines_are_one_line(argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert simulators_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_list_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulators_main(["scenario", "--list"]) == 0
    assert capsys.readouterr().out.startswith("building ")
