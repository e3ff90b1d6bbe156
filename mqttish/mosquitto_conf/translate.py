"""mosquitto.conf lines -> the dict a YAML configuration would be, with Mosquitto's meaning.

Theory of operation: the file is read line by line (an `include_dir` line
reads that directory's `*.conf` files on the spot, in Mosquitto's order), and
each `key value` line goes to its handler, which writes mqttish's keys into
one of three places, as Mosquitto scopes them: the global settings, the
current listener (keys before the first `listener` line belong to Mosquitto's
default listener, which they then create), or the current bridge (`connection`
section). Keys without a handler are classified in `keys.py`. `finish()` then
applies Mosquitto 2.0's defaults that differ from mqttish's: without any
listener, one on loopback port 1883 that lets anonymous clients in ("local
only mode"); with listeners, all interfaces unless an address is given, and
anonymous clients refused unless `allow_anonymous true`; websocket listeners
that serve no HTTP pages.

Every key path written is remembered with its line, so that a problem found
later, when the dict is validated into `Config`, still names the file, the
line and Mosquitto's key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mqttish.config import ConfigError
from mqttish.mosquitto_conf.keys import IGNORED, REFUSED, UNSUPPORTED, refusal

ALL_INTERFACES = {"ipv4": "0.0.0.0", "ipv6": "::"}
PROTOCOL_MAX_PACKET = 268_435_460
UNLIMITED_INFLIGHT = 65535
_PARENT = re.compile(r"(\.[^.\[\]]+|\[\d+\])$")  # the last step of a key path
DURATION_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}


@dataclass(frozen=True, slots=True)
class Line:
    """One `key value` line, and where it is."""

    file: str
    number: int
    key: str
    value: str  # the rest of the line, stripped

    @property
    def where(self) -> str:
        return f"{self.file}:{self.number}"

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.key}: {problem}")


@dataclass(frozen=True, slots=True)
class Notice:
    """What the user should know about a line that was accepted: a warning or a note."""

    where: str
    key: str
    level: Literal["warning", "note"]
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.text}"


@dataclass
class Translation:
    """The YAML-shaped configuration, what to tell the user, and where each key came from."""

    data: dict[str, Any]
    notices: list[Notice]
    origins: dict[str, Line]  # key path in `data` -> the line it came from

    def locate(self, message: str, source: str) -> str:
        """An error about `data` (`path: problem`), told in the file's terms."""
        path, _, problem = message.partition(": ")
        probe = path
        while probe:
            line = self.origins.get(probe)
            if line is not None:
                return f"{line.where}: {line.key}: {problem}"
            shorter = _PARENT.sub("", probe)  # listeners[0].port -> listeners[0] -> ...
            if shorter == probe:
                break
            probe = shorter
        return f"{source}: {message}"


def translate(path: str | Path) -> Translation:
    """Read a mosquitto.conf (with its include_dir files); ConfigError names the line."""
    lines = list(read_lines(Path(path)))
    per_listener = False
    for line in lines:
        if line.key == "per_listener_settings":
            per_listener = _bool(line)
    translator = _Translator(per_listener)
    for line in lines:
        translator.take(line)
    return translator.finish()


def read_lines(path: Path, main: bool = True) -> Iterator[Line]:
    """The `key value` lines of a file, with the files of its include_dir lines in place."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {path}: {reason}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition(" ")
        key, _, rest = key.partition("\t")
        line = Line(str(path), number, key, (rest + " " + value).strip())
        if key != "include_dir":
            yield line
        elif not main:
            raise line.error("only the main configuration file may include others "
                             "(as in Mosquitto)")
        else:
            yield from _included(line)


def _included(line: Line) -> Iterator[Line]:
    directory = Path(line.value)
    if not line.value or not directory.is_dir():
        raise line.error(f"{line.value!r} is not a directory")
    # Mosquitto's order: alphabetical, an upper case letter before its lower case.
    names = sorted((entry.name for entry in directory.iterdir()
                    if entry.name.endswith(".conf") and entry.is_file()),
                   key=lambda name: (name.lower(), name))
    for name in names:
        yield from read_lines(directory / name, main=False)


def _bool(line: Line) -> bool:
    if line.value not in ("true", "false"):
        raise line.error(f"expected true or false, got {line.value!r}")
    return line.value == "true"


def _int(line: Line, minimum: int = 0) -> int:
    if not re.fullmatch(r"-?\d+", line.value) or int(line.value) < minimum:
        raise line.error(f"expected a whole number of at least {minimum}, got {line.value!r}")
    return int(line.value)


def _word(line: Line, choices: tuple[str, ...] = ()) -> str:
    if not line.value or " " in line.value or (choices and line.value not in choices):
        expected = " or ".join(choices) if choices else "one word"
        raise line.error(f"expected {expected}, got {line.value!r}")
    return line.value


def _text(line: Line) -> str:
    if not line.value:
        raise line.error("expected a value")
    return line.value


def _duration(line: Line) -> int:
    """`persistent_client_expiration 14d`: h, d, w, m (30 days) or y (365 days)."""
    match = re.fullmatch(r"(\d+)([hdwmy])", line.value)
    if match is None:
        raise line.error(f"expected a number followed by h, d, w, m or y (e.g. 14d), "
                         f"got {line.value!r}")
    return int(match[1]) * DURATION_UNITS[match[2]]


@dataclass
class _Section:
    """The global keys, a listener or a bridge being read: its keys, the lines they
    came from, and the keys given twice."""

    line: Line
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Line] = field(default_factory=dict)
    repeats: list[tuple[Line, Line]] = field(default_factory=list)  # (first, again)

    def set(self, key: str, value: Any, line: Line) -> None:
        before = self.origins.get(key)
        if before is not None and before.key == line.key:
            self.repeats.append((before, line))
        self.data[key] = value
        self.origins[key] = line


class _Translator:
    def __init__(self, per_listener: bool) -> None:
        self.per_listener = per_listener
        self.settings = _Section(Line("", 0, "", ""))  # the global keys
        self.default_listener: _Section | None = None
        self.listeners: list[_Section] = []
        self.listener: _Section | None = None  # the current one (after a `listener` line)
        self.bridges: list[_Section] = []
        self.bridge: _Section | None = None
        self.notices: list[Notice] = []
        self.listener_limits: dict[str, list[tuple[int, Line]]] = {}  # max_qos, max_topic_alias
        self.log_types: list[tuple[str, Line]] = []
        self.destinations: list[str] | None = None
        self.log_file: tuple[str, Line] | None = None

    # ------------------------------------------------------------------ dispatch

    def take(self, line: Line) -> None:
        key = line.key
        handler = _HANDLERS.get(key)
        if handler is not None:
            handler(self, line)
            return
        why = refusal(key)
        if why is not None:
            raise _refused(line, why)
        if key in IGNORED:
            self.note(line, f"accepted, not needed: {IGNORED[key]}")
        elif key in UNSUPPORTED:
            self.warn(line, f"not supported, ignored: {UNSUPPORTED[key]}")
        else:
            self.warn(line, "unknown key, ignored")

    def note(self, line: Line, text: str) -> None:
        self.notices.append(Notice(line.where, line.key, "note", text))

    def warn(self, line: Line, text: str) -> None:
        self.notices.append(Notice(line.where, line.key, "warning", text))

    # ------------------------------------------------------------------ scopes

    def current_listener(self, line: Line) -> _Section:
        """The listener a listener key applies to: Mosquitto's default listener before
        the first `listener` line (which the key then brings into being)."""
        if self.listener is not None:
            return self.listener
        if self.default_listener is None:
            self.default_listener = _Section(line)
        return self.default_listener

    def security(self, key: str, value: Any, line: Line) -> None:
        """password_file, acl_file, allow_anonymous: per listener if per_listener_settings."""
        target = self.current_listener(line) if self.per_listener else self.settings
        target.set(key, value, line)

    def current_bridge(self, line: Line) -> _Section:
        if self.bridge is None:
            raise line.error("only in a bridge's section, after a 'connection NAME' line")
        return self.bridge

    # ------------------------------------------------------------------ global keys

    def allow_anonymous(self, line: Line) -> None:
        self.security("allow_anonymous", _bool(line), line)

    def password_file(self, line: Line) -> None:
        self.security("password_file", _text(line), line)

    def acl_file(self, line: Line) -> None:
        self.security("acl_file", _text(line), line)

    def per_listener_settings(self, line: Line) -> None:
        pass  # read before the other lines (translate)

    def allow_zero_length_clientid(self, line: Line) -> None:
        if self.per_listener:
            self.note(line, "applies to every listener")
        self.settings.set("allow_zero_length_clientid", _bool(line), line)

    def max_inflight_messages(self, line: Line) -> None:
        value = _int(line)
        if not value:
            self.note(line, f"0 (no limit) is {UNLIMITED_INFLIGHT}, the most MQTT allows")
        self.settings.set("max_inflight_messages", value or UNLIMITED_INFLIGHT, line)

    def max_packet_size(self, line: Line) -> None:
        self.settings.set("max_packet_size", _int(line) or PROTOCOL_MAX_PACKET, line)

    def max_queued_messages(self, line: Line) -> None:
        value = _int(line)
        if not value:
            self.warn(line, "0 (no limit) is not supported: every queue is bounded; "
                            "mqttish keeps its default of 1000 (set a number to change it)")
            return
        self.settings.set("max_queued_messages", value, line)

    def persistence_file(self, line: Line) -> None:
        name = _text(line)
        if name == "mosquitto.db":
            self.note(line, "mqttish keeps its state in its own format, in mqttish.db beside "
                            "Mosquitto's mosquitto.db (which it neither reads nor changes)")
            name = "mqttish.db"
        self.settings.set("persistence_file", name, line)

    def user(self, line: Line) -> None:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            raise line.error(f"mqttish does not switch to another user: start it as "
                             f"{_text(line)!r} (systemd: User={_text(line)}) rather than as "
                             "root. mqttish does not start rather than run as root")
        self.note(line, "applies only when started as root, as in Mosquitto")

    def check_retain_source(self, line: Line) -> None:
        if _bool(line):
            raise _refused(line, REFUSED["check_retain_source"])

    def upgrade_outgoing_qos(self, line: Line) -> None:
        if _bool(line):
            self.warn(line, f"not supported, ignored: {UNSUPPORTED['upgrade_outgoing_qos']}")

    def log_dest(self, line: Line) -> None:
        kind, _, rest = _text(line).partition(" ")
        dest = self.destinations = [] if self.destinations is None else self.destinations
        if kind in ("stdout", "stderr"):
            if kind not in dest:
                dest.append(kind)
        elif kind == "file":
            if not rest.strip():
                raise line.error("'file' needs the path of the log file")
            if self.log_file is not None:
                raise line.error("only one log file may be configured (as in Mosquitto)")
            self.log_file = (rest.strip(), line)
        elif kind == "none":
            dest.clear()
            self.log_file = None
        elif kind in ("syslog", "topic", "dlt"):
            self.warn(line, f"log destination {kind!r} is not supported: logging to stderr")
            if "stderr" not in dest:
                dest.append("stderr")
        else:
            raise line.error(f"unknown destination {kind!r} (stdout, stderr, file PATH, none)")

    def log_type(self, line: Line) -> None:
        kind = _word(line, ("debug", "error", "warning", "notice", "information", "subscribe",
                            "unsubscribe", "websockets", "none", "all"))
        self.log_types.append((kind, line))

    # ------------------------------------------------------------------ listeners

    def new_listener(self, line: Line) -> None:
        port_text, _, address = _text(line).partition(" ")
        port = _int(Line(line.file, line.number, line.key, port_text))
        if address.strip().startswith("/") or (port == 0 and address.strip()):
            raise line.error("unix socket listeners are not supported")
        if port > 65535:
            raise line.error(f"expected a port up to 65535, got {port}")
        section = self.listener = _Section(line)
        self.listeners.append(section)
        section.set("port", port, line)
        if address.strip():
            section.set("bind", address.strip(), line)

    def port(self, line: Line) -> None:
        self.note(line, "deprecated in Mosquitto: the default listener's port; "
                        "'listener PORT' says the same")
        default = self.current_default(line)
        default.set("port", _int(line), line)

    def bind_address(self, line: Line) -> None:
        self.current_default(line).set("bind", _word(line), line)

    def current_default(self, line: Line) -> _Section:
        if self.default_listener is None:
            self.default_listener = _Section(line)
        return self.default_listener

    def protocol(self, line: Line) -> None:
        kind = _word(line, ("mqtt", "websockets"))
        self.current_listener(line).set("protocol", "websocket" if kind == "websockets"
                                        else "mqtt", line)

    def socket_domain(self, line: Line) -> None:
        self.current_listener(line).set("socket_domain", _word(line, ("ipv4", "ipv6")), line)

    def max_connections(self, line: Line) -> None:
        value = _int(line, minimum=-1)
        self.current_listener(line).set("max_connections", max(value, 0), line)

    def listener_limit(self, line: Line) -> None:
        """max_qos and max_topic_alias: per listener in Mosquitto, for the whole broker here."""
        self.current_listener(line)  # (a key before any listener makes the default one)
        minimum = {"max_qos": 0, "max_topic_alias": 0}[line.key]
        self.listener_limits.setdefault(line.key, []).append((_int(line, minimum), line))

    def tls_version(self, line: Line) -> None:
        self.current_listener(line).set("tls_version", _tls_version(self, line), line)

    def tls_keyform(self, line: Line) -> None:
        if _word(line, ("pem", "engine")) == "engine":
            raise _refused(line, REFUSED["tls_engine"])

    # ------------------------------------------------------------------ bridges

    def connection(self, line: Line) -> None:
        section = self.bridge = _Section(line)
        self.bridges.append(section)
        section.set("name", _word(line), line)

    def address(self, line: Line) -> None:
        self.current_bridge(line).set("addresses", re.split(r"[\s,]+", _text(line)), line)

    def topic(self, line: Line) -> None:
        bridge = self.current_bridge(line)
        topics = bridge.data.setdefault("topics", [])
        bridge.origins[f"topics[{len(topics)}]"] = line
        topics.append(_bridge_topic(line))

    def bridge_protocol_version(self, line: Line) -> None:
        version = _word(line, ("mqttv31", "mqttv311", "mqttv50"))
        if version == "mqttv31":
            self.warn(line, "MQTT 3.1 bridges are not supported: using mqttv311")
            version = "mqttv311"
        self.current_bridge(line).set("protocol_version", version, line)

    def notifications_local_only(self, line: Line) -> None:
        if _bool(line):  # the local state topic is always published
            self.current_bridge(line).set("notifications", False, line)

    def restart_timeout(self, line: Line) -> None:
        parts = _text(line).split()
        if not 1 <= len(parts) <= 2 or not all(re.fullmatch(r"\d+(\.\d+)?", p) for p in parts):
            raise line.error(f"expected 'BASE CAP' or 'CONSTANT' in seconds, got {line.value!r}")
        self.current_bridge(line).set("restart_timeout", [float(p) for p in parts], line)

    def start_type(self, line: Line) -> None:
        kind = _word(line, ("automatic", "lazy", "once"))
        if kind == "lazy":
            self.warn(line, "lazy bridges are not supported: it starts at once (automatic)")
            kind = "automatic"
        self.current_bridge(line).set("start_type", kind, line)

    def bridge_file(self, line: Line) -> None:
        """bridge_cafile, _capath, _certfile, _keyfile; a CA turns TLS on, as in Mosquitto."""
        key = line.key.removeprefix("bridge_")
        bridge = self.current_bridge(line)
        bridge.set(key, _text(line), line)
        if key in ("cafile", "capath"):
            bridge.set("tls", True, line)

    def bridge_tls_version(self, line: Line) -> None:
        self.current_bridge(line).set("tls_version", _tls_version(self, line), line)

    # ------------------------------------------------------------------ the end

    def finish(self) -> Translation:
        data: dict[str, Any] = {}
        origins: dict[str, Line] = {}
        listeners = ([self.default_listener] if self.default_listener is not None else []) \
            + self.listeners
        local_only = not listeners
        if local_only:  # Mosquitto 2: loopback only, and anonymous clients are let in
            listeners = [_Section(Line("", 0, "", ""), {"port": 1883})]
        data["listeners"] = []
        for index, section in enumerate(listeners):
            listener = dict(section.data)
            domain = listener.pop("socket_domain", "ipv4")
            if not local_only:
                listener.setdefault("port", 1883)
                listener.setdefault("bind", ALL_INTERFACES[domain])
            if listener.get("protocol") == "websocket":  # Mosquitto serves no pages there
                listener.update(dashboard=False, metrics=False)
            data["listeners"].append(listener)
            for key, line in section.origins.items():
                origins[f"listeners[{index}].{key}"] = line
            origins[f"listeners[{index}]"] = section.line
        settings = self.settings
        # Mosquitto 2's default, for the listeners that do not say (the global value, if
        # given, replaces it below).
        data["allow_anonymous"] = local_only
        for key, limits in self.listener_limits.items():
            self._listener_limit(key, limits, len(listeners), data, origins)
        for key, value in settings.data.items():
            data[key] = value
            origins[key] = settings.origins[key]
        self._logging(data, origins)
        for section in (settings, *listeners, *self.bridges):
            for first, again in section.repeats:  # Mosquitto refuses these; we say so
                self.warn(again, f"given again (first at {first.where}): this value applies")
        if self.bridges:
            data["bridges"] = [self._bridge(index, section, origins)
                               for index, section in enumerate(self.bridges)]
        return Translation(data, self.notices, origins)

    def _listener_limit(self, key: str, limits: list[tuple[int, Line]], listeners: int,
                        data: dict[str, Any], origins: dict[str, Line]) -> None:
        ours = {"max_qos": "max_qos", "max_topic_alias": "topic_alias_maximum"}[key]
        value, line = min(limits, key=lambda item: item[0])
        if listeners > 1:
            self.warn(line, f"applies to every listener here: {key} {value}, the lowest given")
        data[ours] = value
        origins[ours] = line

    def _logging(self, data: dict[str, Any], origins: dict[str, Line]) -> None:
        if self.log_types:
            kinds = {kind for kind, _ in self.log_types}
            level = "error"
            for wanted, when in (("warning", {"warning"}),
                                 ("info", {"notice", "information", "subscribe", "unsubscribe"}),
                                 ("debug", {"debug", "all"})):
                if kinds & when:
                    level = wanted
            data["log_level"] = level
            origins["log_level"] = self.log_types[-1][1]
            if level == "debug":
                data["log_packets"] = True
        if self.destinations is not None:
            data["log_dest"] = list(self.destinations)
        if self.log_file is not None:
            data["log_file"] = self.log_file[0]
            origins["log_file"] = self.log_file[1]

    def _bridge(self, index: int, section: _Section, origins: dict[str, Line]) -> dict[str, Any]:
        bridge = dict(section.data)
        name = bridge["name"]
        if "addresses" not in bridge:
            raise section.line.error(f"bridge {name!r} has no 'address' line")
        if "topics" not in bridge:
            raise section.line.error(f"bridge {name!r} has no 'topic' line: nothing to share")
        origins[f"bridges[{index}]"] = section.line
        for key, line in section.origins.items():
            origins[f"bridges[{index}].{key}"] = line
        return bridge


def _refused(line: Line, why: str) -> ConfigError:
    return line.error(f"{why}. mqttish does not start rather than run less securely than "
                      "configured")


def _tls_version(translator: _Translator, line: Line) -> str:
    version = _word(line, ("tlsv1.3", "tlsv1.2", "tlsv1.1"))
    if version == "tlsv1.1":
        translator.warn(line, "TLS 1.1 is not supported: TLS 1.2 is the oldest accepted")
        return "tlsv1.2"
    return version


def _bridge_topic(line: Line) -> dict[str, Any]:
    """`topic pattern [[[out | in | both] qos] local-prefix remote-prefix]`; "" is empty."""
    tokens = ["" if token == '""' else token for token in line.value.split()]
    if not 1 <= len(tokens) <= 5:
        raise line.error("expected 'pattern [direction [qos [local-prefix [remote-prefix]]]]'")
    topic: dict[str, Any] = {"pattern": tokens[0]}
    if len(tokens) > 1:
        if tokens[1] not in ("in", "out", "both"):
            raise line.error(f"expected the direction in, out or both, got {tokens[1]!r}")
        topic["direction"] = tokens[1]
    if len(tokens) > 2:
        if tokens[2] not in ("0", "1", "2"):
            raise line.error(f"expected the QoS 0, 1 or 2, got {tokens[2]!r}")
        topic["qos"] = int(tokens[2])
    if len(tokens) > 3:
        topic["local_prefix"] = tokens[3]
    if len(tokens) > 4:
        topic["remote_prefix"] = tokens[4]
    return topic


def _simple_handlers() -> dict[str, Callable[[_Translator, Line], None]]:
    """Keys that set one of mqttish's keys from one value, by scope."""
    handlers: dict[str, Callable[[_Translator, Line], None]] = {}

    def scoped(scope: str, key: str, parse: Callable[[Line], Any]
               ) -> Callable[[_Translator, Line], None]:
        def handle(self: _Translator, line: Line) -> None:
            target = {"global": lambda: self.settings,
                      "listener": lambda: self.current_listener(line),
                      "bridge": lambda: self.current_bridge(line)}[scope]()
            target.set(key, parse(line), line)
        return handle

    table: tuple[tuple[str, str, str, Callable[[Line], Any]], ...] = (
        # (Mosquitto's key, scope, mqttish's key, parser)
        ("connection_messages", "global", "connection_messages", _bool),
        ("max_keepalive", "global", "max_keepalive", _int),
        ("max_queued_bytes", "global", "max_queued_bytes", _int),
        ("message_size_limit", "global", "message_size_limit", _int),
        ("persistence", "global", "persistence", _bool),
        ("persistence_location", "global", "persistence_location", _text),
        ("persistent_client_expiration", "global", "persistent_client_expiration", _duration),
        ("queue_qos0_messages", "global", "queue_qos0_messages", _bool),
        ("retain_available", "global", "retain_available", _bool),
        ("sys_interval", "global", "sys_interval", _int),
        ("cafile", "listener", "cafile", _text),
        ("certfile", "listener", "certfile", _text),
        ("keyfile", "listener", "keyfile", _text),
        ("ciphers", "listener", "ciphers", _word),
        ("require_certificate", "listener", "require_certificate", _bool),
        ("use_identity_as_username", "listener", "use_identity_as_username", _bool),
        ("use_subject_as_username", "listener", "use_subject_as_username", _bool),
        ("bridge_attempt_unsubscribe", "bridge", "attempt_unsubscribe", _bool),
        ("bridge_bind_address", "bridge", "bind_address", _word),
        ("bridge_max_packet_size", "bridge", "max_packet_size", _int),
        ("bridge_outgoing_retain", "bridge", "outgoing_retain", _bool),
        ("bridge_insecure", "bridge", "tls_insecure", _bool),
        ("bridge_alpn", "bridge", "alpn", _word),
        ("cleansession", "bridge", "clean_session", _bool),
        ("local_cleansession", "bridge", "local_clean_session", _bool),
        ("keepalive_interval", "bridge", "keepalive", _int),
        ("clientid", "bridge", "remote_clientid", _word),
        ("remote_clientid", "bridge", "remote_clientid", _word),
        ("local_clientid", "bridge", "local_clientid", _word),
        ("username", "bridge", "remote_username", _text),
        ("remote_username", "bridge", "remote_username", _text),
        ("password", "bridge", "remote_password", _text),
        ("remote_password", "bridge", "remote_password", _text),
        ("notifications", "bridge", "notifications", _bool),
        ("notification_topic", "bridge", "notification_topic", _word),
        ("round_robin", "bridge", "round_robin", _bool),
        ("try_private", "bridge", "try_private", _bool),
    )
    for mosquitto_key, scope, key, parse in table:
        handlers[mosquitto_key] = scoped(scope, key, parse)
    return handlers


_HANDLERS: dict[str, Callable[[_Translator, Line], None]] = {
    **_simple_handlers(),
    "acl_file": _Translator.acl_file,
    "addresses": _Translator.address,
    "address": _Translator.address,
    "allow_anonymous": _Translator.allow_anonymous,
    "allow_zero_length_clientid": _Translator.allow_zero_length_clientid,
    "bind_address": _Translator.bind_address,
    "bridge_cafile": _Translator.bridge_file,
    "bridge_capath": _Translator.bridge_file,
    "bridge_certfile": _Translator.bridge_file,
    "bridge_keyfile": _Translator.bridge_file,
    "bridge_protocol_version": _Translator.bridge_protocol_version,
    "bridge_tls_version": _Translator.bridge_tls_version,
    "check_retain_source": _Translator.check_retain_source,
    "connection": _Translator.connection,
    "listener": _Translator.new_listener,
    "log_dest": _Translator.log_dest,
    "log_type": _Translator.log_type,
    "max_connections": _Translator.max_connections,
    "max_inflight_messages": _Translator.max_inflight_messages,
    "max_packet_size": _Translator.max_packet_size,
    "max_qos": _Translator.listener_limit,
    "max_queued_messages": _Translator.max_queued_messages,
    "max_topic_alias": _Translator.listener_limit,
    "notifications_local_only": _Translator.notifications_local_only,
    "password_file": _Translator.password_file,
    "per_listener_settings": _Translator.per_listener_settings,
    "persistence_file": _Translator.persistence_file,
    "port": _Translator.port,
    "protocol": _Translator.protocol,
    "restart_timeout": _Translator.restart_timeout,
    "socket_domain": _Translator.socket_domain,
    "start_type": _Translator.start_type,
    "tls_keyform": _Translator.tls_keyform,
    "tls_version": _Translator.tls_version,
    "topic": _Translator.topic,
    "upgrade_outgoing_qos": _Translator.upgrade_outgoing_qos,
    "user": _Translator.user,
}
SUPPORTED = frozenset(_HANDLERS) | {"include_dir"}
