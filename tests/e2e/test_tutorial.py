"""The temperature tutorial's steps (docs/tutorial-temperature.md), run as a reader runs them.

Every part is its own program, started with the tutorial's command line (on a
free port) and stopped the way a reader stops it: Ctrl-C is SIGINT.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BrokerThread
from tests.e2e.broker_process import ROOT, PythonProgram, free_port

Start = Callable[..., PythonProgram]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start programs; any still running when the test ends is killed."""
    started: list[PythonProgram] = []

    def start(module: str, *args: str) -> PythonProgram:
        program = PythonProgram(module, *args)
        started.append(program)
        return program

    yield start
    for program in started:
        program.kill()


def ctrl_c(program: PythonProgram) -> None:
    program.process.send_signal(signal.SIGINT)
    assert program.wait() == 0, program.text()


def test_the_building_logs_to_stderr_and_prints_its_summary_to_stdout(
        broker: BrokerThread) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "scenario", "building", "--duration", "1",
         "-h", "127.0.0.1", "-p", str(broker.port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "scenario 'building' running: 4 sensors, a monitor, 4 actuators, seed 2024" \
        in result.stderr
    summary = result.stdout.splitlines()
    assert summary[:3] == ["scenario summary:", "  scenario     building (seed 2024)",
                           "  devices      4 sensors, a monitor, 4 actuators"]
    readings = next(line for line in summary if line.startswith("  readings"))
    assert int(readings.split()[1]) >= 4  # every sensor reads once as it starts
    assert "summary" not in result.stderr


def test_run_the_parts_apart_a_restarted_actuator_gets_the_event_it_missed(
        start: Start, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mqttish.yaml"
    config.write_text(f"listeners:\n  - port: {port}\n")
    start("mqttish", "-c", str(config)).wait_for("listening on")
    broker = ("-p", str(port))
    actuator_command = ("simulators", "actuator", "--site", "hq", "--room", "kitchen",
                        "--kind", "fan", *broker)
    actuator = start(*actuator_command)
    actuator.wait_for("hq-kitchen-fan: fan off, listening to events/temperature/+/hq/kitchen")
    monitor = start("simulators", "monitor", "--high", "26", "--hysteresis", "0.5", *broker)
    monitor.wait_for("watching sensors/+/+/temperature")
    sensor = start("simulators", "sensor", "--site", "hq", "--room", "kitchen",
                   "--interval", "2", "--setpoint", "23", *broker)
    monitor.wait_for("hq/kitchen: ")  # its first reading: normal

    # "Now stop the sensor and the actuator (Ctrl-C in their terminals),
    # heat the kitchen by hand, and start the actuator again."
    ctrl_c(sensor)
    ctrl_c(actuator)
    published = subprocess.run(
        [sys.executable, "-m", "mqttish", "pub", "-t", "sensors/hq/kitchen/temperature",
         "-m", "28", "-q", "1", *broker], cwd=ROOT, capture_output=True, text=True, timeout=15)
    assert published.returncode == 0, published.stderr
    monitor.wait_for("hq/kitchen: 28.00 crossed 26: normal -> high")
    restarted = start(*actuator_command)
    restarted.wait_for("hq-kitchen-fan: fan on (high event at 28.0)")
