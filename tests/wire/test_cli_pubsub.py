"""`mqttish pub` / `mqttish sub` as subprocesses, with the broker and mosquitto's own tools.

Tests wait for output lines, never for time: a subscriber is known to be
subscribed when it prints a retained "ready" message published before it
started (or, with -R, when `-d` logs its SUBACK).
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import BrokerThread

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]


def mqttish(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "mqttish", command, *args]


def run(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT, cwd=ROOT,
                          check=False)


class Process:
    """A running command whose output lines arrive in queues, so tests can wait for them."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stdout: queue.Queue[bytes | None] = queue.Queue()
        self.stderr: queue.Queue[bytes | None] = queue.Queue()
        self.errors: list[bytes] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        for pipe, lines in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(pipe, lines), daemon=True).start()

    @staticmethod
    def _pump(pipe: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
        for line in pipe:
            lines.put(line)
        lines.put(None)

    def line(self) -> bytes:
        """The next line of stdout, without its newline."""
        line = self.stdout.get(timeout=TIMEOUT)
        assert line is not None, f"{self.argv} ended early: {self.error_text()}"
        return line.rstrip(b"\n")

    def wait_stderr(self, text: str) -> None:
        while True:
            line = self.stderr.get(timeout=TIMEOUT)
            assert line is not None, f"{self.argv} ended before logging {text!r}"
            self.errors.append(line)
            if text.encode() in line:
                return

    def wait(self) -> int:
        return self.popen.wait(TIMEOUT)

    def error_text(self) -> str:
        self.popen.wait(TIMEOUT)
        while (line := self.stderr.get(timeout=TIMEOUT)) is not None:
            self.errors.append(line)
        return b"".join(self.errors).decode()


@pytest.fixture
def start() -> Iterator[type[Process]]:
    """Start processes that are killed after the test if still running."""
    started: list[Process] = []

    class Tracked(Process):
        def __init__(self, argv: list[str]) -> None:
            super().__init__(argv)
            started.append(self)

    yield Tracked
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(TIMEOUT)


def ready(broker: BrokerThread, prefix: str) -> None:
    """A retained message every subscriber to `prefix/#` prints first: proof it is subscribed."""
    assert run(["mosquitto_pub", "-p", str(broker.port), "-t", f"{prefix}/ready", "-m",
                "ready", "-r"]).returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ interoperability


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mqttish_pub_to_mosquitto_sub(broker: BrokerThread, start: type[Process], version: str,
                                      qos: str) -> None:
    port = str(broker.port)
    ready(broker, "interop")
    sub = start(["mosquitto_sub", "-p", port, "-V", version, "-q", "2", "-t", "interop/#",
                 "-C", "2", "-F", "%q %r %t %p"])
    assert sub.line() == b"0 1 interop/ready ready"
    result = run(mqttish("pub", "-p", port, "-V", version, "-q", qos, "-t", "interop/x",
                         "-m", "hello"))
    assert (result.returncode, result.stderr) == (0, b"")
    assert sub.line() == f"{qos} 0 interop/x hello".encode()
    assert sub.wait() == 0


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mosquitto_pub_to_mqttish_sub(broker: BrokerThread, start: type[Process], version: str,
                                      qos: str) -> None:
    port = str(broker.port)
    ready(broker, "interop")
    sub = start(mqttish("sub", "-p", port, "-V", version, "-q", "2", "-t", "interop/#",
                        "-v", "-C", "2"))
    assert sub.line() == b"interop/ready ready"
    result = run(["mosquitto_pub", "-p", port, "-V", version, "-q", qos, "-t", "interop/x",
                  "-m", "hello world"])
    assert result.returncode == 0
    assert sub.line() == b"interop/x hello world"
    assert sub.wait() == 0
    assert sub.error_text() == ""


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages_both_ways(broker: BrokerThread, version: str) -> None:
    port = str(broker.port)
    result = run(mqttish("pub", "-p", port, "-V", version, "-q", "1", "-r", "-t", "ret/ours",
                         "-m", "kept"))
    assert result.returncode == 0
    result = run(["mosquitto_sub", "-p", port, "-V", version, "-t", "ret/ours", "-C", "1",
                  "-F", "%r %t %p"])
    assert result.stdout == b"1 ret/ours kept\n"
    assert run(["mosquitto_pub", "-p", port, "-V", version, "-r", "-t", "ret/theirs", "-m",
                "kept too"]).returncode == 0
    result = run(mqttish("sub", "-p", port, "-V", version, "-t", "ret/theirs", "-C", "1",
                         "-v"))
    assert (result.returncode, result.stdout) == (0, b"ret/theirs kept too\n")


def test_null_message_clears_retained_and_w_times_out(broker: BrokerThread) -> None:
    port = str(broker.port)
    assert run(mqttish("pub", "-p", port, "-r", "-t", "clear/me", "-m", "x")).returncode == 0
    assert run(mqttish("pub", "-p", port, "-r", "-t", "clear/me", "-n")).returncode == 0
    # Nothing retained is left, so -W is what ends the subscriber: status 27, like mosquitto.
    result = run(mqttish("sub", "-p", port, "-t", "clear/me", "-W", "0.5"))
    assert (result.returncode, result.stdout, result.stderr) == (27, b"", b"Timed out\n")


def test_skip_retained(broker: BrokerThread, start: type[Process]) -> None:
    port = str(broker.port)
    ready(broker, "stale")
    sub = start(mqttish("sub", "-p", port, "-t", "stale/#", "-R", "-v", "-C", "1", "-d"))
    sub.wait_stderr("subscribed to 'stale/#'")
    assert run(["mosquitto_pub", "-p", port, "-t", "stale/live", "-m", "fresh"]).returncode == 0
    assert sub.line() == b"stale/live fresh"
    assert sub.wait() == 0


@pytest.mark.parametrize("source", ["pipe", "file"])
def test_pub_each_line_of_stdin(broker: BrokerThread, start: type[Process], tmp_path: Path,
                                source: str) -> None:
    port = str(broker.port)
    ready(broker, "lines")
    sub = start(["mosquitto_sub", "-p", port, "-t", "lines/#", "-C", "5", "-q", "1", "-v"])
    assert sub.line() == b"lines/ready ready"
    text = b"one\ntwo\n\nthree"
    argv = mqttish("pub", "-p", port, "-t", "lines/x", "-l", "-q", "1")
    if source == "pipe":
        result = run(argv, stdin=text)
    else:
        path = tmp_path / "lines.txt"
        path.write_bytes(text)
        with path.open("rb") as stdin:
            result = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=TIMEOUT,
                                    cwd=ROOT, check=False)
    assert (result.returncode, result.stderr) == (0, b"")
    assert [sub.line() for _ in range(4)] == [  # mosquitto_sub -v shows empty as (null)
        b"lines/x one", b"lines/x two", b"lines/x (null)", b"lines/x three"]


def test_pub_file_and_user_properties(broker: BrokerThread, start: type[Process],
                                      tmp_path: Path) -> None:
    port = str(broker.port)
    path = tmp_path / "payload.bin"
    path.write_bytes(b"from a file")
    ready(broker, "props")
    sub = start(["mosquitto_sub", "-p", port, "-V", "mqttv5", "-t", "props/#", "-C", "2",
                 "-F", "%t %p %P"])
    assert sub.line().startswith(b"props/ready ready")
    result = run(mqttish("pub", "-p", port, "-V", "5", "-t", "props/x", "-f", str(path),
                         "-D", "PUBLISH", "user-property", "site", "north",
                         "-D", "PUBLISH", "content-type", "text/plain"))
    assert (result.returncode, result.stderr) == (0, b"")
    assert sub.line() == b"props/x from a file site:north"


# ------------------------------------------------------------------ sessions and wills


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_gets_messages_sent_while_away(broker: BrokerThread,
                                                          version: str) -> None:
    port = str(broker.port)
    ready(broker, "away")
    subscriber = ["-p", port, "-V", version, "-c", "-i", "cli-away", "-q", "1", "-t", "away/#",
                  "-v", "-C", "1"]
    assert run(mqttish("sub", *subscriber)).stdout == b"away/ready ready\n"
    assert run(["mosquitto_pub", "-p", port, "-q", "1", "-t", "away/queued",
                "-m", "for later"]).returncode == 0
    result = run(mqttish("sub", *subscriber, "-R"))  # -R: skip the retained 'ready' this time
    assert (result.returncode, result.stdout) == (0, b"away/queued for later\n")


@pytest.mark.parametrize(("stop", "will_expected"), [
    pytest.param(signal.SIGKILL, True, id="killed"),
    pytest.param(signal.SIGTERM, False, id="terminated"),
])
def test_will_only_when_the_client_vanishes(broker: BrokerThread, start: type[Process],
                                            stop: signal.Signals, will_expected: bool) -> None:
    port = str(broker.port)
    ready(broker, "wills")
    watcher = start(["mosquitto_sub", "-p", port, "-t", "wills/#", "-v"])
    assert watcher.line() == b"wills/ready ready"
    sub = start(mqttish("sub", "-p", port, "-t", "anything", "-d", "--will-topic", "wills/sub",
                        "--will-payload", "vanished", "--will-qos", "1"))
    sub.wait_stderr("subscribed to 'anything'")
    sub.popen.send_signal(stop)
    status = sub.wait()
    if will_expected:
        assert watcher.line() == b"wills/sub vanished"
    else:
        assert status == 0  # SIGTERM ends it cleanly, with DISCONNECT
        assert run(["mosquitto_pub", "-p", port, "-t", "wills/barrier", "-m", "after"]
                   ).returncode == 0
        assert watcher.line() == b"wills/barrier after"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("command", [["pub", "-m", "x"], ["sub"]])
def test_nothing_listening_is_one_line_on_stderr(command: list[str]) -> None:
    result = run(mqttish(command[0], "-p", str(free_port()), "-t", "t", *command[1:]))
    assert result.returncode == 1
    assert result.stdout == b""
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"mqttish {command[0]}: cannot connect to localhost:")
    assert line.endswith("Connection refused")


def test_refused_connection_is_one_line_on_stderr(
        start_broker: Callable[..., BrokerThread]) -> None:
    strict = start_broker(allow_anonymous=False)
    result = run(mqttish("pub", "-p", str(strict.port), "-V", "5", "-t", "t", "-m", "x"))
    assert result.returncode == 1
    assert result.stderr == b"mqttish pub: connection refused: NOT_AUTHORIZED (0x87)\n"


@pytest.mark.parametrize("argv", [
    ["pub", "-t", "a/#", "-m", "x"],
    ["pub", "-t", "a"],
    ["sub", "-t", "a", "-c"],
    ["sub", "-t", "a", "-V", "mqttv4"],
    ["pub", "-t", "a", "-m", "x", "-D", "PUBLISH", "session-expiry-interval", "5", "-V", "5"],
    ["pub", "-t", "a", "-m", "x", "-D", "PUBLISH", "content-type", "t"],
])
def test_usage_errors_are_one_line_and_status_2(argv: list[str]) -> None:
    result = run(mqttish(*argv))
    assert result.returncode == 2
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"mqttish {argv[0]}: ")


def test_help_lists_the_mosquitto_options() -> None:
    result = run(mqttish("sub", "--help"))
    assert result.returncode == 0
    for option in (b"-h HOST", b"-C COUNT", b"-W SECONDS", b"--will-topic"):
        assert option in result.stdout
