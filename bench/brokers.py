"""The brokers under test: how to install, configure, start, probe and stop each one.

Each run gets a fresh broker process on a free loopback port, pinned to the
broker CPU with `taskset` and with a high RLIMIT_NOFILE, its configuration in
a file written for that run, and its output in a log file next to it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from bench import mqtt
from bench.procstat import raise_fd_limit
from bench.scenarios import BrokerSettings

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
AMQTT_VENV = BENCH_DIR / ".venv-amqtt"
AMQTT_REQUIREMENT = "amqtt==0.12.1"
AEDES_DIR = BENCH_DIR / ".node-aedes"
AEDES_REQUIREMENT = "aedes@1.2.0"
MOSQUITTO = "/usr/sbin/mosquitto"
BROKER_FD_LIMIT = 65536
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"  # Mosquitto's name, mqttish's too


class BrokerError(Exception):
    """A broker could not be installed or started."""


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPU the brokers and the load generator run on (None: not pinned)."""

    broker_cpu: int | None
    load_cpu: int | None

    @classmethod
    def detect(cls) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            return cls(cpus[0], cpus[1])
        return cls(None, None)

    def broker_prefix(self) -> list[str]:
        return ["taskset", "-c", str(self.broker_cpu)] if self.broker_cpu is not None else []

    def load_prefix(self) -> list[str]:
        return ["taskset", "-c", str(self.load_cpu)] if self.load_cpu is not None else []

    def describe(self) -> str:
        if self.broker_cpu is None:
            return "not pinned (fewer than 2 CPUs or no taskset)"
        return (f"broker on CPU {self.broker_cpu} (`taskset -c {self.broker_cpu}`), "
                f"load generator on CPU {self.load_cpu} (`taskset -c {self.load_cpu}`)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _raise_limits() -> None:  # runs in the broker's process before exec
    raise_fd_limit(BROKER_FD_LIMIT)


@dataclass
class StopReport:
    returncode: int | None
    died_early: bool  # exited before we asked it to stop: a crash
    killed: bool  # ignored SIGTERM for STOP_TIMEOUT seconds


class RunningBroker:
    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int,
                 log_path: Path) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until an MQTT client gets its CONNACK (not just a TCP accept)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BrokerError(f"{self.name} exited with {self.process.returncode} on "
                                  f"start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(mqtt.connect("bench-probe"))
                    if sock.recv(4)[:1] == bytes([mqtt.CONNACK]):
                        sock.sendall(mqtt.DISCONNECT)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"{self.name} did not accept clients within {timeout:.0f} s:"
                                  f"\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> StopReport:
        died_early = self.process.poll() is not None
        killed = False
        if not died_early:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                killed = True
                self.process.kill()
                self.process.wait()
        return StopReport(self.process.returncode, died_early, killed)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class BrokerKind(ABC):
    name: str
    label: str
    config: Path | None = None  # a fixed config file instead of the generated one
    dropped_topic: str | None = None  # a retained $SYS counter of dropped deliveries
    scenarios: tuple[str, ...] | None = None  # the scenarios it runs (None: all)
    pinned = True  # on the broker CPU; False: free to use every CPU

    def prepare(self) -> None:
        """Install or check what the broker needs (once per harness run)."""
        return

    @abstractmethod
    def command(self, port: int, workdir: Path, settings: BrokerSettings) -> list[str]:
        """The command line for a broker on `port`; may write a config file in `workdir`."""

    @abstractmethod
    def version(self) -> str: ...

    def environment(self) -> dict[str, str] | None:
        """The broker process's environment (None: the harness's own)."""
        return None

    def sys_interval(self, seconds: float) -> float:
        """The $SYS interval the broker really uses when asked for `seconds`."""
        return seconds

    def directory(self) -> Path:
        """The broker process's working directory."""
        return ROOT

    def start(self, port: int, workdir: Path, pinning: Pinning,
              settings: BrokerSettings) -> RunningBroker:
        broker = self.launch(port, workdir, pinning, settings)
        broker.wait_ready()
        return broker

    def launch(self, port: int, workdir: Path, pinning: Pinning,
               settings: BrokerSettings) -> RunningBroker:
        """The broker's process, started; not necessarily accepting clients yet."""
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"{self.name}-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*pinning.broker_prefix(), *self.command(port, workdir, settings)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_raise_limits, start_new_session=True, cwd=self.directory(),
                env=self.environment(),
            )
        return RunningBroker(self.name, process, port, log_path)


class Mqttish(BrokerKind):
    name = "mqttish"
    label = "mqttish"
    dropped_topic = DROPPED_TOPIC
    # The config key of the stall timeout (seconds); None for a revision without one
    # (then the broker's own default applies, and the target is judged against the param).
    stall_timeout_key: str | None = "stall_timeout"
    source: Path | None = None  # an exported revision; None: the working tree
    revision = ""

    def use_revision(self, revision: str, into: Path) -> None:
        """Run mqttish as committed at `revision` (exported with git archive), not the tree.

        Others may be editing mqttish/ while a long benchmark runs; a commit stays put.
        """
        commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
        if not commit:
            raise BrokerError(f"--mqttish-rev {revision!r}: not a commit")
        target = into / f"mqttish-src-{commit[:12]}"
        if not (target / "mqttish" / "__init__.py").exists():
            target.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "archive", commit, "mqttish"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        self.source, self.revision = target, commit[:12]

    def environment(self) -> dict[str, str] | None:
        if self.source is None:
            return None
        # Ahead of the editable install of the working tree (a finder after PYTHONPATH).
        return {**os.environ, "PYTHONPATH": str(self.source)}

    def directory(self) -> Path:
        # `python -m` puts the working directory first on sys.path: not the repository's.
        return self.source or ROOT

    def command(self, port: int, workdir: Path, settings: BrokerSettings) -> list[str]:
        config = self.config or self._write_config(port, workdir, settings)
        return [sys.executable, "-m", "mqttish", "-c", str(config), "-p", str(port)]

    def _write_config(self, port: int, workdir: Path, settings: BrokerSettings) -> Path:
        config = workdir / f"mqttish-{port}.yaml"
        config.write_text(self.config_text(port, settings))
        return config

    def config_text(self, port: int, settings: BrokerSettings) -> str:
        """The YAML configuration the harness gives mqttish for one scenario."""
        lines = ["# written by bench/brokers.py", "listeners:", f"  - port: {port}"]
        if settings.metrics_port is not None:
            lines += [f"  - port: {settings.metrics_port}", "    protocol: websocket",
                      "    dashboard: false"]
        lines.append("log_level: warning")
        if settings.max_inflight is not None:
            lines.append(f"max_inflight_messages: {settings.max_inflight}")
        if settings.max_queued is not None:
            lines.append(f"max_queued_messages: {settings.max_queued}")
        if settings.sys_interval is not None:
            lines.append(f"sys_interval: {settings.sys_interval:g}")
        key = self.stall_timeout_key
        if settings.stall_timeout is not None and key and self._has_config_key(key):
            lines.append(f"{key}: {settings.stall_timeout:g}")
        if settings.password_file is not None:
            lines.append(f"password_file: {settings.password_file}")
        if settings.acl_file is not None:
            lines.append(f"acl_file: {settings.acl_file}")
        if settings.store is not None:
            lines += ["persistence: true", f"persistence_location: {settings.store}"]
        return "\n".join(lines) + "\n"

    def _has_config_key(self, key: str) -> bool:
        """Whether the mqttish being run knows `key` (an older --mqttish-rev may not)."""
        source = (self.source or ROOT) / "mqttish" / "config.py"
        return re.search(rf"^    {re.escape(key)}: ", source.read_text(), re.MULTILINE) is not None

    def version(self) -> str:
        version = importlib.metadata.version("mqttish")
        if self.revision:
            return f"{version} (commit {self.revision}, exported with --mqttish-rev)"
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = " + uncommitted changes" if _git("status", "--porcelain", "mqttish") else ""
        return f"{version} (working tree at {commit}{dirty})" if commit else version


class Mosquitto(BrokerKind):
    name = "mosquitto"
    label = "Mosquitto"
    dropped_topic = DROPPED_TOPIC

    def prepare(self) -> None:
        if not os.access(MOSQUITTO, os.X_OK):
            raise BrokerError(f"{MOSQUITTO} not found: apt-get install mosquitto")

    def sys_interval(self, seconds: float) -> float:
        return max(1, round(seconds))  # whole seconds only

    def command(self, port: int, workdir: Path, settings: BrokerSettings) -> list[str]:
        config = workdir / f"mosquitto-{port}.conf"
        lines = ["# written by bench/brokers.py for one run", f"listener {port} 127.0.0.1",
                 "max_connections -1", "set_tcp_nodelay true", "log_dest stderr",
                 "log_type error", "log_type warning", "connection_messages false"]
        if settings.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += [f"password_file {settings.password_file}", "allow_anonymous false"]
        if settings.acl_file is not None:
            lines.append(f"acl_file {settings.acl_file}")
        if settings.store is None:
            lines.append("persistence false")
        else:
            lines += ["persistence true", f"persistence_location {settings.store}/"]
        if settings.max_inflight is not None:
            lines.append(f"max_inflight_messages {settings.max_inflight}")
        if settings.max_queued is not None:
            lines.append(f"max_queued_messages {settings.max_queued}")
        if settings.sys_interval is not None:
            lines.append(f"sys_interval {self.sys_interval(settings.sys_interval):g}")
        # No stall timeout: Mosquitto never holds a publisher back, it drops instead.
        config.write_text("\n".join(lines) + "\n")
        return [MOSQUITTO, "-c", str(config)]

    def version(self) -> str:
        result = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
        first = (result.stdout or result.stderr).splitlines()[:1]
        return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


class Amqtt(BrokerKind):
    name = "amqtt"
    label = "amqtt"

    @property
    def python(self) -> Path:
        return AMQTT_VENV / "bin" / "python"

    def prepare(self) -> None:
        """Create bench/.venv-amqtt and install amqtt there (never in the project venv)."""
        check = [str(self.python), "-c", "import amqtt.broker"]
        if self.python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
            return
        print(f"bench: installing {AMQTT_REQUIREMENT} into {AMQTT_VENV}", file=sys.stderr)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(AMQTT_VENV)], check=True)
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        if subprocess.run([*pip, AMQTT_REQUIREMENT], check=False).returncode != 0:
            raise BrokerError(f"could not install {AMQTT_REQUIREMENT} into {AMQTT_VENV}")

    def command(self, port: int, workdir: Path, settings: BrokerSettings) -> list[str]:
        # amqtt has no inflight, queue or stall limits: `settings` has nothing to set.
        config = workdir / f"amqtt-{port}.yaml"
        config.write_text(
            "# written by bench/brokers.py for one run\n"
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
            "  amqtt.plugins.sys.broker.BrokerSysPlugin:\n"
            "    sys_interval: 10\n"
        )
        return [str(self.python), str(BENCH_DIR / "amqtt_broker.py"), str(config)]

    def version(self) -> str:
        script = "import importlib.metadata as m; print(m.version('amqtt'))"
        result = subprocess.run([str(self.python), "-c", script], capture_output=True,
                                text=True, check=False)
        return result.stdout.strip() or "not installed"


class Aedes(BrokerKind):
    """aedes (Node.js) through bench/aedes_broker.mjs, installed by npm into bench/.node-aedes."""

    name = "aedes"
    label = "aedes"

    @property
    def package(self) -> Path:
        return AEDES_DIR / "node_modules" / "aedes" / "package.json"

    def prepare(self) -> None:
        """npm-install aedes into bench/.node-aedes (git-ignored), not into node_modules/."""
        if self.package.exists():
            return
        if not shutil.which("node") or not shutil.which("npm"):
            raise BrokerError("aedes needs node and npm: apt-get install nodejs npm")
        print(f"bench: installing {AEDES_REQUIREMENT} into {AEDES_DIR}", file=sys.stderr)
        AEDES_DIR.mkdir(parents=True, exist_ok=True)
        command = ["npm", "install", "--prefix", str(AEDES_DIR), "--no-audit", "--no-fund",
                   "--no-save", "--loglevel=error", AEDES_REQUIREMENT]
        if subprocess.run(command, check=False).returncode != 0 or not self.package.exists():
            raise BrokerError(f"could not install {AEDES_REQUIREMENT} into {AEDES_DIR}")

    def command(self, port: int, workdir: Path, settings: BrokerSettings) -> list[str]:
        # aedes has no inflight or queue limits (stream backpressure instead) and no
        # drop counter; its stall timeout is `drainTimeout` (default 60 s).
        command = ["node", str(BENCH_DIR / "aedes_broker.mjs"), "--aedes", str(AEDES_DIR),
                   "--port", str(port)]
        if settings.stall_timeout is not None:
            command += ["--drain-timeout-ms", str(round(settings.stall_timeout * 1000))]
        return command

    def version(self) -> str:
        try:
            return str(json.loads(self.package.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return "not installed"


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                            check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


class MqttishWorkers(Mqttish):
    """`mqttish --workers 2` (docs/scaling.md): two processes and a private redis-server,
    free to use both CPUs, so they share one with the load generator."""

    name = "mqttish-w2"
    label = "mqttish --workers 2"
    scenarios = ("fan-in-qos0", "fan-in-qos1", "fan-out-qos0", "connections")
    pinned = False

    def command(self, port: int, workdir: Path, settings: BrokerSettings) -> list[str]:
        return [*super().command(port, workdir, settings), "--workers", "2"]

    def start(self, port: int, workdir: Path, pinning: Pinning,
              settings: BrokerSettings) -> RunningBroker:
        return super().start(port, workdir, _EveryCpu(None, None), settings)


class _EveryCpu(Pinning):
    """Not pinned: every CPU of the machine (the harness pins itself, and so its children,
    to the load CPU: a broker started without `taskset` would inherit that)."""

    def broker_prefix(self) -> list[str]:
        last = (os.cpu_count() or 1) - 1
        return ["taskset", "-c", f"0-{last}"] if shutil.which("taskset") else []


BROKERS: dict[str, BrokerKind] = {
    kind.name: kind for kind in (Mqttish(), MqttishWorkers(), Mosquitto(), Aedes(), Amqtt())
}
