"""Build step: the wheel carries the dashboard's browser libraries, so `pip install` serves them.

MQTT.js and Chart.js come from npm (package.json, package-lock.json). When a
wheel is built (`pip install .`, `pipx install .`, `pip wheel .`), `build_py`
copies the files that mqttish/dashboard allow-lists (`LIBRARIES`), and each
library's licence, from node_modules into the package as
`mqttish/dashboard/vendor/<the same path>`, where `find_node_modules()` looks
first. node_modules is filled by `npm ci` unless it already holds exactly the
versions package-lock.json names. An editable install (`make`) copies
nothing: it serves the checkout's node_modules directly.

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
NODE_MODULES = ROOT / "node_modules"


def allow_list() -> dict[str, str]:
    """`LIBRARIES` of mqttish/dashboard: read from its source, mqttish is not importable here."""
    source = (ROOT / "mqttish" / "dashboard" / "__init__.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "LIBRARIES" for t in targets):
                assert node.value is not None
                return dict(ast.literal_eval(node.value))
    raise SystemExit("setup.py: LIBRARIES not found in mqttish/dashboard/__init__.py")


def package_of(path: str) -> str:
    """The npm package a node_modules path belongs to: `mqtt`, `chart.js`, `@scope/name`."""
    parts = path.split("/")
    return "/".join(parts[:2] if parts[0].startswith("@") else parts[:1])


def installed_as_locked(packages: set[str]) -> bool:
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    for package in packages:
        manifest = NODE_MODULES / package / "package.json"
        if not manifest.is_file():
            return False
        version = json.loads(manifest.read_text()).get("version")
        if version != locked.get(f"node_modules/{package}", {}).get("version"):
            return False
    return True


def npm_ci() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("mqttish: building the package needs npm (Node.js) for the dashboard's "
                         "libraries, MQTT.js and Chart.js: install Node.js with npm and retry")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT,
                   check=True)


def vendor_dashboard_libraries(target: Path) -> None:
    """Copy the allow-listed library files, and each library's licence, under `target`."""
    files = sorted(set(allow_list().values()))
    packages = {package_of(path) for path in files}
    if not installed_as_locked(packages):
        npm_ci()
    licences = [path.relative_to(NODE_MODULES).as_posix() for package in sorted(packages)
                for path in (NODE_MODULES / package).glob("LICEN[CS]E*")]
    for name in [*files, *licences]:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NODE_MODULES / name, destination)


class BuildPyWithDashboardLibraries(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            vendor_dashboard_libraries(Path(self.build_lib) / "mqttish" / "dashboard" / "vendor")


setup(cmdclass={"build_py": BuildPyWithDashboardLibraries})
