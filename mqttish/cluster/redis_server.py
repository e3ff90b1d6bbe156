"""A private `redis-server` on a Unix socket: what `--workers N` runs when no Redis is
configured (and what the tests run).

It keeps nothing on disk unless asked (`appendonly`): the cluster it serves lives
as long as the process that started it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 10.0


class RedisServerError(Exception):
    """redis-server is missing or did not start; the message says what to do."""


class RedisServer:
    """`redis-server` listening on `directory/redis.sock` only (no TCP port)."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        program = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if program is None:
            raise RedisServerError("redis-server not found: install it (Debian: apt-get install "
                                   "redis-server), or set cluster.redis to a Redis you run")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [program, "--port", "0", "--unixsocket", str(self.socket),
                   "--unixsocketperm", "700", "--dir", str(self.directory), "--save", "",
                   "--appendonly", "yes" if self.appendonly else "no",
                   "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") \
                    if self.process.stderr else ""
                raise RedisServerError(f"redis-server exited with {self.process.returncode}: "
                                       f"{error.strip() or self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RedisServerError(f"redis-server did not answer on {self.socket} within "
                                       f"{START_TIMEOUT:.0f} s: {self._log_tail()}")
            time.sleep(0.01)
        return self

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return " / ".join((self.directory / "redis.log").read_text().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
