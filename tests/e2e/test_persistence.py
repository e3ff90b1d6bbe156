"""Durable state, the way a Mosquitto user checks it: mosquitto_pub / mosquitto_sub across
a restart of the broker, after a clean stop and after kill -9 (issue #14)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.e2e.broker_process import BrokerProcess, free_port


def _needs_mosquitto_clients() -> None:
    if shutil.which("mosquitto_pub") is None:
        missing("mosquitto-clients not installed")


class DurableBroker:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.http = free_port()
        self.config = tmp_path / "broker.yaml"
        self.config.write_text(
            f"listeners:\n  - port: {self.port}\n"
            f"  - port: {self.http}\n    protocol: websocket\n"
            f"persistence: true\npersistence_location: {tmp_path / 'data'}\nsys_interval: 1\n")
        self.process = self.start()

    def start(self) -> BrokerProcess:
        process = BrokerProcess("-c", str(self.config))
        process.wait_for("dashboard at")
        return process

    def restart(self, how: signal.Signals) -> None:
        self.process.process.send_signal(how)
        self.process.wait()
        self.process = self.start()

    def pub(self, *args: str) -> None:
        subprocess.run(["mosquitto_pub", "-p", str(self.port), *args], check=True, timeout=10)

    def sub(self, *args: str) -> str:
        return subprocess.run(["mosquitto_sub", "-p", str(self.port), "-W", "5", *args],
                              check=True, timeout=10, capture_output=True, text=True).stdout


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill-9"])
def test_retained_and_durable_sessions_survive_a_restart(tmp_path: Path,
                                                         how: signal.Signals) -> None:
    _needs_mosquitto_clients()
    broker = DurableBroker(tmp_path)
    try:
        broker.pub("-t", "state/door", "-m", "open", "-r", "-q", "1")
        # A durable session: subscribes, goes away, and a QoS 1 message is queued for it.
        broker.sub("-c", "-i", "durable-client", "-q", "1", "-t", "orders/#", "-E")
        broker.pub("-t", "orders/42", "-m", "ship it", "-q", "1")
        broker.restart(how)
        assert broker.sub("-t", "state/door", "-C", "1", "-v") == "state/door open\n"
        assert broker.sub("-c", "-i", "durable-client", "-q", "1", "-t", "orders/#", "-C", "1",
                          "-v") == "orders/42 ship it\n"
    finally:
        broker.process.kill()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill-9"])
def test_jobs_waiting_for_a_shared_group_survive_a_restart(tmp_path: Path,
                                                           how: signal.Signals) -> None:
    """Durable workers share `jobs/#`; while none is connected, acknowledged jobs wait in
    the group's backlog. They were in memory only, and a restart lost them."""
    _needs_mosquitto_clients()
    broker = DurableBroker(tmp_path)
    try:
        for worker in ("worker-a", "worker-b"):
            broker.sub("-c", "-i", worker, "-q", "1", "-t", "$share/workers/jobs/#", "-E")
        for job in range(3):
            broker.pub("-t", f"jobs/{job}", "-m", f"job {job}", "-q", "1")
        broker.restart(how)
        done = broker.sub("-c", "-i", "worker-a", "-q", "1", "-t", "$share/workers/jobs/#",
                          "-C", "3", "-v")
        assert done == "jobs/0 job 0\njobs/1 job 1\njobs/2 job 2\n"
    finally:
        broker.process.kill()


def test_the_store_shows_in_sys_and_metrics(tmp_path: Path) -> None:
    _needs_mosquitto_clients()
    broker = DurableBroker(tmp_path)
    try:
        broker.pub("-t", "kept/a", "-m", "1", "-r", "-q", "1")
        size = broker.sub("-t", "$SYS/broker/persistence/size", "-C", "1")
        assert int(size) > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.http}/metrics",
                                    timeout=5) as answer:
            text = answer.read().decode()
        assert "mqttish_store_size_bytes" in text
        assert "mqttish_store_commit_seconds_bucket" in text
        commits = next(line for line in text.splitlines()
                       if line.startswith("mqttish_store_commits_total"))
        assert float(commits.split()[1]) >= 1
    finally:
        broker.process.kill()


def test_a_corrupt_store_stops_the_start_and_names_the_file(tmp_path: Path) -> None:
    broker = DurableBroker(tmp_path)
    broker.process.process.send_signal(signal.SIGTERM)
    broker.process.wait()
    store = tmp_path / "data" / "mqttish.db"
    store.write_bytes(b"this is not what the broker wrote" * 100)
    process = BrokerProcess("-c", str(broker.config))
    assert process.wait() == 1
    assert str(store) in process.text()
