"""A real Mosquitto broker (Debian's /usr/sbin/mosquitto), started by a test on a free port.

The test writes the configuration's extra lines; the helper adds the listener,
starts `mosquitto -c`, waits for the line saying it runs (never sleeps), and
stops it at the end. `stop()` and `start()` again keep the port and the
files, as an administrator's restart does.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from tests.e2e.broker_process import Program, free_port

MOSQUITTO = "/usr/sbin/mosquitto"


def installed() -> bool:
    return os.path.exists(MOSQUITTO) and shutil.which("mosquitto_sub") is not None


class Mosquitto:
    def __init__(self, directory: Path, extra: str = "", port: int | None = None,
                 listener: str | None = None, conf: str | None = None) -> None:
        """`extra` lines after a listener on 127.0.0.1 open to anonymous clients (or
        `listener`, lines of one's own); or `conf`, a whole configuration of its own."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = directory / "mosquitto.conf"
        if conf is None:
            head = listener if listener is not None else \
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            conf = f"{head}persistence_location {directory}/\n{extra}"
        # As root, Mosquitto becomes the 'mosquitto' user, who cannot read the test's files.
        user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.conf.write_text(user + conf)
        self.program: Program | None = None

    def start(self) -> Mosquitto:
        self.program = Program([MOSQUITTO, "-c", str(self.conf), "-v"], cwd=self.directory)
        self.program.wait_for(" running", timeout=10)
        return self

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop`: Mosquitto saves its persistence file first."""
        program = self.program
        if program is not None and program.process.poll() is None:
            program.process.terminate()
            try:
                program.wait(10)
            finally:
                program.kill()

    def log(self) -> str:
        return self.program.text() if self.program is not None else ""

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        assert self.program is not None
        return self.program.wait_for(text, timeout)

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True
