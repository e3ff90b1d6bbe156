"""A configuration file of either kind: mqttish's YAML, or a Mosquitto mosquitto.conf.

The format is told from the lines themselves (mosquitto_conf/detect.py), so
`mqttish -c /etc/mosquitto/mosquitto.conf` just works. A mosquitto.conf is
translated into the dict the YAML loader would have built, and both are
validated by the same code into `Config`; errors in a mosquitto.conf name its
file, line and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mqttish.config import Config, ConfigError, parse_config
from mqttish.mosquitto_conf import Notice, looks_like_mosquitto, translate
from mqttish.typed_yaml import SchemaError, build


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    notices: tuple[Notice, ...] = ()  # what a mosquitto.conf's lines became, when not obvious
    mosquitto: bool = False  # read from Mosquitto's format


def read_config_file(path: str | Path) -> LoadedConfig:
    """Read and validate a configuration file; ConfigError says what to fix, and where."""
    text = _read(path)
    if not looks_like_mosquitto(text, str(path)):
        return LoadedConfig(parse_config(text, str(path)))
    translation = translate(path)
    try:
        config = build(Config, translation.data)
    except SchemaError as exc:
        raise ConfigError(translation.locate(str(exc), str(path))) from None
    return LoadedConfig(config, tuple(translation.notices), mosquitto=True)


def mosquitto_as_yaml(path: str | Path) -> str:
    """`mqttish convert`: a mosquitto.conf as the equivalent YAML, its notices as comments.

    The YAML is validated first, so what is printed is a configuration mqttish accepts.
    """
    text = _read(path)
    if not looks_like_mosquitto(text, str(path)):
        raise ConfigError(f"{path}: this is YAML already, not a mosquitto.conf")
    translation = translate(path)
    try:
        build(Config, translation.data)
    except SchemaError as exc:
        raise ConfigError(translation.locate(str(exc), str(path))) from None
    header = [f"# mqttish configuration converted from {path}"]
    header += [f"# {notice.level}: {notice}" for notice in translation.notices]
    body = yaml.safe_dump(_plain(translation.data), sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def _plain(value: Any) -> Any:
    """Lists rather than tuples, so that safe_dump writes plain YAML."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not UTF-8 text") from None
