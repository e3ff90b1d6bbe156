"""The live dashboard's files: our own page (package data) and browser libraries from npm.

The page's HTML, JavaScript and CSS ship inside the package (`static/`). MQTT.js
and Chart.js are not copied into the repository: they come from the
`node_modules` folder that `npm ci` fills, and are served through the fixed
allow-list below, so no other file is ever reachable. A wheel (`pip install .`,
`pipx install .`) carries the allow-listed files in `vendor/`, laid out as in
node_modules (setup.py copies them at build time); a checkout with an editable
install (`make run`) serves its node_modules. Where they are looked for, in order:

1. the `MQTTISH_NODE_MODULES` environment variable;
2. the installed package's own copy (`mqttish/dashboard/vendor`);
3. the checkout this package runs from (`<repo>/node_modules`, as with `make run`);
4. `node_modules` in the current directory.

Without the libraries, `/` answers 503 with a page saying how to install them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = Path(__file__).parent / "vendor"  # in an installed wheel only

JS = "text/javascript; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Asset:
    path: Path
    content_type: str


# URL path -> file in the package.
PAGES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", JS),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

# URL path -> file under node_modules: the only library files the broker serves.
LIBRARIES: dict[str, str] = {
    "/vendor/mqtt.min.js": "mqtt/dist/mqtt.min.js",
    "/vendor/chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
}


def find_node_modules() -> Path | None:
    """The first node_modules folder holding every library the dashboard needs."""
    candidates = []
    configured = os.environ.get("MQTTISH_NODE_MODULES")
    if configured:
        candidates.append(Path(configured))
    candidates.append(VENDOR)
    candidates.append(Path(__file__).resolve().parents[2] / "node_modules")
    candidates.append(Path.cwd() / "node_modules")
    for folder in candidates:
        if all((folder / name).is_file() for name in LIBRARIES.values()):
            return folder
    return None


MISSING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mqttish dashboard unavailable</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The dashboard's libraries are not installed</h1>
<p>The mqttish dashboard uses MQTT.js and Chart.js from npm, and this broker could not
find them (<code>node_modules/mqtt/dist/mqtt.min.js</code> and
<code>node_modules/chart.js/dist/chart.umd.min.js</code>).</p>
<p>In the mqttish repository, run <code>npm ci</code> (or <code>make run</code>, which does
it), or install mqttish from a wheel (<code>pip install .</code> builds one that carries
them), or point the <code>MQTTISH_NODE_MODULES</code> environment variable at a
<code>node_modules</code> folder that has the <code>mqtt</code> and <code>chart.js</code>
packages, then restart the broker.</p>
<p>MQTT over WebSocket, <code>/metrics</code> and <code>/healthz</code> work without them.</p>
</body></html>
"""


class DashboardAssets:
    """Which file answers which URL path; nothing outside the two allow-lists."""

    def __init__(self, node_modules: Path | None) -> None:
        self.node_modules = node_modules

    @classmethod
    def discover(cls) -> DashboardAssets:
        return cls(find_node_modules())

    @property
    def available(self) -> bool:
        return self.node_modules is not None and (STATIC / "index.html").is_file()

    def lookup(self, path: str) -> Asset | None:
        page = PAGES.get(path)
        if page is not None:
            name, content_type = page
            return Asset(STATIC / name, content_type)
        library = LIBRARIES.get(path)
        if library is not None and self.node_modules is not None:
            return Asset(self.node_modules / library, JS)
        return None
