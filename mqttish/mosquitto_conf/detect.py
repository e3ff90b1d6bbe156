"""Telling a mosquitto.conf from a YAML configuration, by what its lines look like.

A YAML configuration is a mapping: its lines are `key: value`, `- item`,
`{...}` or indented continuations. A mosquitto.conf is `key value` lines.
Comments (`#`) are the same in both, so a file of comments alone (Mosquitto's
example configuration) is told by its name: `.yaml` / `.yml` is YAML.
"""

from __future__ import annotations

import re

_YAML_KEY = re.compile(r"^[\w.$-]+\s*:(\s|$)")
_MOSQUITTO_LINE = re.compile(r"^[A-Za-z_][\w.]*(\s|$)")


def looks_like_mosquitto(text: str, name: str = "") -> bool:
    """Whether `text` (the file `name`) is in Mosquitto's format rather than YAML."""
    seen_mosquitto = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-", "{", "---", "[")) or _YAML_KEY.match(line):
            return False
        if raw[:1].isspace():  # an indented continuation: YAML
            return False
        if _MOSQUITTO_LINE.match(line):
            seen_mosquitto = True
    if seen_mosquitto:
        return True
    return not name.endswith((".yaml", ".yml"))
