"""Run `python -m mqttish` (or a simulator, or any program) and wait for its log lines."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Program:
    """A program, its stdout and stderr read line by line (never sleep: wait for a line)."""

    def __init__(self, command: Sequence[str], cwd: Path = ROOT,
                 env: Mapping[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """The first (further) output line containing `text`."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"process ended before {text!r}: {''.join(self.output)}")
            if text in line:
                return line

    def wait(self, timeout: float = 15.0) -> int:
        code = self.process.wait(timeout)
        return code

    def text(self) -> str:
        return "".join(self.output)

    def kill(self) -> None:
        """End it at once if it still runs (a test that failed half way)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PythonProgram(Program):
    """`python -m <module> <args>` in the repository."""

    def __init__(self, module: str, *args: str) -> None:
        super().__init__([sys.executable, "-m", module, *args])


class BrokerProcess(PythonProgram):
    def __init__(self, *args: str) -> None:
        super().__init__("mqttish", *args)
