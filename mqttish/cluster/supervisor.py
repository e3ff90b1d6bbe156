"""`mqttish --workers N`: N broker processes on one machine, acting as one broker.

The supervisor (this process) starts N workers, each `mqttish serve` with the
same configuration, listening on the same ports (SO_REUSEPORT: the kernel
spreads new connections among them) and joined as nodes of one cluster. With
no `cluster.redis` configured, it first starts a private `redis-server` on a
Unix socket in a temporary directory, which keeps nothing on disk and goes
away with the supervisor.

SIGTERM and SIGINT stop the workers (each shuts down gracefully) and then
Redis; SIGHUP is passed on (reload). A worker that dies is started again
after a second, as a new node; the cluster adopts what the dead one left.
If workers keep dying (RESTART_LIMIT in RESTART_WINDOW seconds), the
supervisor gives up and stops everything.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from mqttish.cluster.redis_server import RedisServer, RedisServerError
from mqttish.config import Config

log = logging.getLogger("mqttish.supervisor")

RESTART_DELAY = 1.0
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 15.0


class Worker:
    def __init__(self, index: int, command: list[str]) -> None:
        self.index = index
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.restart_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        log.info("worker %d started (pid %d)", self.index, self.process.pid)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)


class Supervisor:
    def __init__(self, config: Config, serve_args: Sequence[str]) -> None:
        self.config = config
        self.serve_args = list(serve_args)  # the command line, without --workers
        self.workers: list[Worker] = []
        self.redis: RedisServer | None = None
        self._wake = threading.Event()
        self._stop_signal: int | None = None
        self._reload = False
        self._deaths: list[float] = []

    def run(self) -> int:
        for listener in self.config.listeners:
            if listener.port == 0:
                print("mqttish: --workers needs fixed ports (port 0 would give each worker "
                      "its own)", file=sys.stderr)
                return 2
        directory = None
        url = self.config.cluster.redis if self.config.cluster else None
        if url is None:
            directory = Path(tempfile.mkdtemp(prefix="mqttish-redis-"))
            try:
                self.redis = RedisServer(directory).start()
            except RedisServerError as exc:
                print(f"mqttish: --workers without cluster.redis runs a private Redis: {exc}",
                      file=sys.stderr)
                shutil.rmtree(directory, ignore_errors=True)
                return 1
            url = self.redis.url
            log.info("private redis-server on %s", self.redis.socket)
        base = (self.config.cluster.node_id if self.config.cluster and
                self.config.cluster.node_id else socket.gethostname())
        for index in range(self.config.workers):
            command = [sys.executable, "-m", "mqttish", "serve", *self.serve_args,
                       "--cluster-redis", url, "--node-id", f"{base}-w{index + 1}",
                       "--reuse-port"]
            self.workers.append(Worker(index + 1, command))
        previous = {signum: signal.signal(signum, self._signalled)
                    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                   signal.SIGCHLD)}
        try:
            for worker in self.workers:
                worker.start()
            return self._supervise()
        finally:
            self._stop_workers()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.redis is not None:
                self.redis.stop()
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop_signal = signum
        elif signum == signal.SIGHUP:
            self._reload = True
        self._wake.set()

    def _supervise(self) -> int:
        while self._stop_signal is None:
            self._wake.wait(0.5)
            self._wake.clear()
            if self._reload:
                self._reload = False
                for worker in self.workers:
                    worker.signal(signal.SIGHUP)
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is not None and process.poll() is not None and self._stop_signal is None:
                    log.error("worker %d (pid %d) exited with %s: starting it again in %g s",
                              worker.index, process.pid, process.returncode, RESTART_DELAY)
                    worker.process = None
                    worker.restart_at = now + RESTART_DELAY
                    self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW]
                    self._deaths.append(now)
                    if len(self._deaths) > RESTART_LIMIT:
                        log.critical("workers died %d times in %g s: giving up",
                                     len(self._deaths), RESTART_WINDOW)
                        return 1
                if worker.process is None and now >= worker.restart_at:
                    worker.start()
            if self.redis is not None and self.redis.process is not None \
                    and self.redis.process.poll() is not None:
                log.critical("the private redis-server exited: stopping the workers")
                return 1
        log.info("received %s: stopping the workers", signal.Signals(self._stop_signal).name)
        return 0

    def _stop_workers(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %g s: killing it", worker.index,
                          STOP_TIMEOUT)
                process.kill()
                process.wait()


def supervise(config: Config, serve_args: Sequence[str]) -> int:
    """Run `config.workers` workers until a signal stops them (see the module docstring)."""
    if os.name != "posix" or not hasattr(socket, "SO_REUSEPORT"):
        print("mqttish: --workers needs SO_REUSEPORT (Linux, BSD)", file=sys.stderr)
        return 2
    return Supervisor(config, serve_args).run()
