"""The benchmark harness end to end in smoke mode: mqttish only, about a second per scenario.

Not a timed test: it checks that the harness ran every scenario and that the
numbers are sane (traffic flowed, nothing lost at QoS 1, every client
connected, every retained message arrived), never how fast anything was.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results_dir = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-docs", "--results-dir", str(results_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    [path] = results_dir.glob("results-*.json")
    data: dict[str, Any] = json.loads(path.read_text())
    data["stdout"] = completed.stdout
    data["by_scenario"] = {run["scenario"]: run for run in data["runs"]}
    return data


def result(smoke: dict[str, Any], scenario: str) -> dict[str, Any]:
    run = smoke["by_scenario"][scenario]
    assert "error" not in run, run["error"]
    assert run["broker"] == "mqttish"
    outcome: dict[str, Any] = run["result"]
    assert outcome["broker_cpu"] >= 0
    assert outcome["generator_cpu"] >= 0
    return outcome


def test_every_scenario_ran_once_without_error(smoke: dict[str, Any]) -> None:
    assert sorted(smoke["by_scenario"]) == sorted(
        ["fan-in-qos0", "fan-in-qos1", "fan-out-qos0", "latency", "connections", "retained"])
    assert len(smoke["runs"]) == 6
    assert all("error" not in run for run in smoke["runs"])
    assert not any("shutdown" in run for run in smoke["runs"]), "broker ignored SIGTERM"


def test_table_is_printed(smoke: dict[str, Any]) -> None:
    assert "| Scenario / metric | mqttish |" in smoke["stdout"]
    assert "fan-in QoS 0, delivered" in smoke["stdout"]


@pytest.mark.parametrize("scenario", ["fan-in-qos0", "fan-in-qos1", "fan-out-qos0"])
def test_throughput_scenarios_move_messages(smoke: dict[str, Any], scenario: str) -> None:
    outcome = result(smoke, scenario)
    assert outcome["rate"] > 0
    assert outcome["sent"] > 0
    assert 0 <= outcome["loss"] <= outcome["sent"]
    assert outcome["duplicates"] == 0


def test_qos1_fan_in_loses_nothing(smoke: dict[str, Any]) -> None:
    outcome = result(smoke, "fan-in-qos1")
    assert outcome["loss"] == 0
    assert outcome["unacked"] == 0
    assert outcome["ack_stalls"] == 0


def test_latency_is_measured(smoke: dict[str, Any]) -> None:
    outcome = result(smoke, "latency")
    assert outcome["samples"] > 0
    assert 0 < outcome["p50_us"] <= outcome["p99_us"] <= outcome["max_us"]
    assert outcome["loss"] == 0


def test_every_idle_client_connects_and_stays(smoke: dict[str, Any]) -> None:
    outcome = result(smoke, "connections")
    assert outcome["connected"] == outcome["clients"] == 200
    assert outcome["connect_errors"] == {}
    assert outcome["disturbed"] == 0
    assert math.isfinite(outcome["kib_per_connection"])
    assert outcome["connect_s"] > 0


def test_every_retained_message_arrives(smoke: dict[str, Any]) -> None:
    outcome = result(smoke, "retained")
    assert outcome["all_received"] == outcome["all_expected"] == 2000
    assert outcome["narrow_received"] == outcome["narrow_expected"] == 100
    assert outcome["all_s"] > 0 and outcome["narrow_ms"] > 0
