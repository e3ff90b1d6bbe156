"""The fuzzer, short and seeded: both phases find nothing, and it does find what it should.

`make fuzz` runs the full size (docs/robustness.md); these runs take seconds.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from mqttish.config import Config
from mqttish.core.hooks import Hook
from mqttish.core.message import Message
from tests.fuzz import core_phase
from tests.fuzz.core_phase import load_reproducer, replay, run_core, signature
from tests.fuzz.mutations import MUTATIONS
from tests.fuzz.wire_phase import BrokerProcess, run_wire


def test_core_phase_finds_nothing(tmp_path: Path) -> None:
    report = run_core(seed=1, packets=20_000, out_dir=tmp_path, minimise_seconds=10)
    assert report.packets >= 20_000
    assert set(report.mutations) == {mutation.__name__ for mutation in MUTATIONS}
    assert not report.failures, "\n".join(
        f"{f.signature}: replay with python -m tests.fuzz replay {f.path}"
        for f in report.failures.values())


def test_wire_phase_finds_nothing(tmp_path: Path) -> None:
    report = run_wire(seed=1, seconds=5, workers=8, out_dir=tmp_path,
                      log_path=tmp_path / "broker.log")
    assert report.rounds == 1
    assert set(report.connections) == {"tcp", "ws", "ws-restricted"}
    assert report.handshakes["101"] > 0
    assert report.heartbeats >= 30
    assert len(report.pings) >= 30
    assert report.connection_errors == 0
    assert report.ok, (report.deaths, report.errors, report.missed, report.pings_late,
                       report.heartbeat_disconnects, report.exit_codes, report.reproducers)


class BrokenObserver(Hook):
    """A bug planted in the broker: observing a publication to a/b fails."""

    def on_publish(self, client: object, message: Message) -> None:
        if message.topic == "a/b":
            raise RuntimeError("planted bug")


def test_core_phase_catches_and_minimises_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The core logs and swallows an unexpected exception; the fuzzer still reports it,
    with a reproducer much smaller than the run that found it."""
    monkeypatch.setitem(core_phase.CONFIGS, "planted", (Config(listeners=()),
                                                         (BrokenObserver(),)))
    monkeypatch.setattr(core_phase, "CONFIG_WEIGHTS", {"planted": 1})
    report = run_core(seed=1, packets=3_000, out_dir=tmp_path, minimise_seconds=10)
    [failure] = report.failures.values()
    assert failure.signature == "RuntimeError in core/hooks.py:on_publish"
    assert len(failure.events) <= 3
    config, events, check_at_end = load_reproducer(Path(failure.path))
    with pytest.raises(RuntimeError) as raised:
        replay(config, events, check_at_end)
    assert signature(raised.value) == failure.signature


def test_broker_log_tracebacks_are_reported(tmp_path: Path) -> None:
    """A traceback in the broker's log, inside an exception group or not, is reported
    once, by its last exception, with the error record that named the connection."""
    fake_broker = textwrap.dedent("""
        for port in (1, 2, 3):
            print(f"2026-01-01 00:00:00 INFO mqttish.server: mqttish 0 listening on "
                  f"127.0.0.1:{port} (mqtt)")
        print("2026-01-01 00:00:01 ERROR mqttish.server: internal error while serving "
              "127.0.0.1:5555: closing it")
        print("Traceback (most recent call last):")
        print('  File "x.py", line 1, in f')
        print("    raise ValueError(5)")
        print("KeyError: 5")
        print("")
        print("During handling of the above exception, another exception occurred:")
        print("ValueError: 5 is not a valid ReasonCode")
        print("2026-01-01 00:00:02 INFO mqttish.server: next")
        print("  + Exception Group Traceback (most recent call last):")
        print("  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)")
        print("  +-+---------------- 1 ----------------")
        print("    | Traceback (most recent call last):")
        print('    |   File "y.py", line 2, in g')
        print("    | wsproto.utilities.LocalProtocolError: Event Pong cannot be sent")
    """)
    errors: list[tuple[str, str]] = []
    broker = BrokerProcess(tmp_path / "log", lambda *error: errors.append(error),
                           [sys.executable, "-c", fake_broker])
    assert broker.wait_ready() == [1, 2, 3]
    broker.process.wait(10)
    broker.stop()
    assert errors == [
        ("ValueError: 5 is not a valid ReasonCode",
         "2026-01-01 00:00:01 ERROR mqttish.server: internal error while serving "
         "127.0.0.1:5555: closing it"),
        ("wsproto.utilities.LocalProtocolError: Event Pong cannot be sent",
         "2026-01-01 00:00:01 ERROR mqttish.server: internal error while serving "
         "127.0.0.1:5555: closing it"),
    ]
