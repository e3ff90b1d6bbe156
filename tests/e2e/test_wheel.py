"""`pip install` gives a working dashboard: the wheel carries MQTT.js and Chart.js.

The wheel is built from a copy of the sources (so the checkout's build/ stays
out of it) whose node_modules is the checkout's (so the build step finds the
locked versions and skips `npm ci`). It is installed without dependencies into
a fresh venv that borrows them from the project's venv through a path file
(not processed as a site directory, so the editable install of the checkout
stays invisible). The broker then runs from that venv, in a folder without
node_modules, and must serve the libraries from the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqttish.dashboard import LIBRARIES
from tests.conftest import missing
from tests.e2e.broker_process import ROOT, Program, free_port

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "package.json",
           "package-lock.json", "mqttish", "simulators")
TIMEOUT = 10


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    (source / "node_modules").symlink_to(ROOT / "node_modules")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-w", str(dist), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("mqttish-*.whl")
    return wheel


def install(wheel: Path, target: Path) -> Path:
    """A fresh venv with the wheel; its dependencies come from the project's venv."""
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                              "get_path('purelib'))"], capture_output=True, text=True,
                             check=True).stdout.strip()
    (Path(purelib) / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--disable-pip-version-check", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=120)
    return target


@pytest.fixture
def broker_from_wheel(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """(the fresh venv, the port of its broker's websocket listener)"""
    if shutil.which("npm") is None or not (ROOT / "node_modules").is_dir():
        missing("needs npm and node_modules (make test installs them)")
    environment = install(build_wheel(tmp_path), tmp_path / "venv")
    port = free_port()
    workdir = tmp_path / "elsewhere"  # no node_modules here
    workdir.mkdir()
    (workdir / "mqttish.yaml").write_text(
        f"listeners:\n  - port: {free_port()}\n  - port: {port}\n    protocol: websocket\n")
    env = {name: value for name, value in os.environ.items()
           if name not in ("MQTTISH_NODE_MODULES", "PYTHONPATH")}
    broker = Program([str(environment / "bin" / "mqttish"), "-c", "mqttish.yaml"],
                     cwd=workdir, env=env)
    try:
        broker.wait_for("dashboard at", timeout=TIMEOUT)
        yield environment, port
    finally:
        broker.kill()


def fetch(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as answer:
        return answer.status, answer.read()


def test_the_wheel_carries_and_serves_the_dashboard_libraries(
        broker_from_wheel: tuple[Path, int]) -> None:
    environment, port = broker_from_wheel
    where = subprocess.run(
        [str(environment / "bin" / "python"), "-c",
         "import mqttish.dashboard as d; print(d.__file__); print(d.find_node_modules())"],
        capture_output=True, text=True, check=True, cwd=environment).stdout.split()
    assert all(Path(path).is_relative_to(environment) for path in where), where
    assert fetch(port, "/")[0] == 200
    for url, name in LIBRARIES.items():
        status, body = fetch(port, url)
        assert status == 200
        assert body == (ROOT / "node_modules" / name).read_bytes()
    [wheel] = (environment.parent / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in LIBRARIES.values():
        assert f"mqttish/dashboard/vendor/{name}" in names
    assert "mqttish/dashboard/vendor/mqtt/LICENSE.md" in names
