"""Reading a mosquitto.conf: Mosquitto's meaning, its defaults, and messages naming the line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mqttish.config import Config, ConfigError, parse_config
from mqttish.config_file import LoadedConfig, mosquitto_as_yaml, read_config_file
from mqttish.mosquitto_conf import looks_like_mosquitto
from tests.conftest import missing

DEBIAN_EXAMPLE = Path("/usr/share/doc/mosquitto/examples/mosquitto.conf")


def read(tmp_path: Path, text: str, name: str = "mosquitto.conf") -> LoadedConfig:
    path = tmp_path / name
    path.write_text(text)
    return read_config_file(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        read(tmp_path, text)
    return str(caught.value)


@pytest.mark.parametrize(("text", "name", "mosquitto"), [
    ("listener 18999\nallow_anonymous true\n", "broker.conf", True),
    ("listener 18999\nallow_anonymous true\n", "broker.yaml", True),  # the lines decide
    ("listeners:\n  - port: 1883\n", "broker.conf", False),
    ("log_level: debug\n", "x", False),
    ("# listener 1883\n\n", "mosquitto.conf", True),  # comments only: the name decides
    ("# listeners: []\n", "mqttish.yaml", False),
    ("log_timestamp_format %Y-%m-%dT%H:%M:%S\nlistener 1883 ::1\n", "m.conf", True),
    ("address host:1883\n", "m.conf", True),
])
def test_format_is_detected(text: str, name: str, mosquitto: bool) -> None:
    assert looks_like_mosquitto(text, name) is mosquitto


def test_the_issue_example_runs_with_mosquittos_meaning(tmp_path: Path) -> None:
    """`listener 18999` + `allow_anonymous true`: every interface, anonymous clients in,
    and no WebSocket listener of mqttish's own defaults."""
    loaded = read(tmp_path, "listener 18999\nallow_anonymous true\n")
    config = loaded.config
    assert loaded.mosquitto and not loaded.notices
    [listener] = config.listeners
    assert (listener.port, config.bind_address(listener), listener.protocol) == (
        18999, "0.0.0.0", "mqtt")
    assert config.allow_anonymous is True


@pytest.mark.parametrize("text", ["", "# nothing but comments\n", "sys_interval 5\n"])
def test_no_listener_is_mosquittos_local_only_mode(tmp_path: Path, text: str) -> None:
    config = read(tmp_path, text).config
    [listener] = config.listeners
    assert (listener.port, config.bind_address(listener)) == (1883, "127.0.0.1")
    assert config.anonymous_allowed(listener)


def test_debian_example_configuration_is_local_only_mode() -> None:
    if not DEBIAN_EXAMPLE.exists():
        missing(f"{DEBIAN_EXAMPLE} is not installed (Debian's mosquitto package)")
    loaded = read_config_file(DEBIAN_EXAMPLE)
    [listener] = loaded.config.listeners
    assert (listener.port, listener.bind, loaded.notices) == (1883, None, ())
    assert loaded.config.allow_anonymous is True


def test_password_file_alone_keeps_local_only_mode_open_to_anonymous(tmp_path: Path) -> None:
    """As Mosquitto 2.0 does (checked): a password file without listeners checks users
    who give a name and still lets anonymous local clients in."""
    config = read(tmp_path, f"password_file {tmp_path}/pw\n").config
    assert config.password_file == f"{tmp_path}/pw"
    assert config.anonymous_allowed(config.listeners[0])


def test_listeners_refuse_anonymous_clients_by_default(tmp_path: Path) -> None:
    """Mosquitto 2: with a listener defined, allow_anonymous defaults to false."""
    config = read(tmp_path, "listener 1884 127.0.0.1\n").config
    assert config.bind_address(config.listeners[0]) == "127.0.0.1"
    assert config.allow_anonymous is False
    assert not config.anonymous_allowed(config.listeners[0])


def test_listener_keys_before_any_listener_make_the_default_listener(tmp_path: Path) -> None:
    config = read(tmp_path, "max_connections 10\nlistener 18861\nmax_connections -1\n"
                            "allow_anonymous true\n").config
    default, explicit = config.listeners
    assert (default.port, default.bind, default.max_connections) == (1883, "0.0.0.0", 10)
    assert (explicit.port, explicit.max_connections) == (18861, 0)


def test_deprecated_port_and_bind_address(tmp_path: Path) -> None:
    loaded = read(tmp_path, "port 1885\nbind_address 127.0.0.1\nallow_anonymous true\n")
    [listener] = loaded.config.listeners
    assert (listener.port, listener.bind) == (1885, "127.0.0.1")
    assert [notice.key for notice in loaded.notices] == ["port"]


def test_socket_domain_and_websockets(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 9001\nprotocol websockets\nsocket_domain ipv6\n"
                            "allow_anonymous true\n").config
    [listener] = config.listeners
    assert (listener.protocol, listener.bind) == ("websocket", "::")
    assert not listener.dashboard and not listener.metrics  # Mosquitto serves no pages


def test_per_listener_settings(tmp_path: Path) -> None:
    config = read(tmp_path, "\n".join([
        "per_listener_settings true",
        "listener 1883 127.0.0.1", "allow_anonymous true",
        "listener 8883", "certfile /c.pem", "keyfile /k.pem", "cafile /ca.pem",
        "require_certificate true", "use_identity_as_username true", "acl_file /acl",
        "password_file /pw", "tls_version tlsv1.3",
    ])).config
    local, secure = config.listeners
    assert local.allow_anonymous is True and local.password_file is None
    assert (secure.port, secure.certfile, secure.keyfile, secure.cafile) == (
        8883, "/c.pem", "/k.pem", "/ca.pem")
    assert secure.require_certificate and secure.use_identity_as_username
    assert (secure.acl_file, secure.password_file, secure.tls_version) == (
        "/acl", "/pw", "tlsv1.3")
    assert config.allow_anonymous is False  # the default of every other listener


def test_global_security_settings_apply_to_every_listener(tmp_path: Path) -> None:
    config = read(tmp_path, "listener 1883\npassword_file /pw\nlistener 1884\n"
                            "acl_file /acl\n").config
    assert (config.password_file, config.acl_file) == ("/pw", "/acl")
    assert all(listener.password_file is None for listener in config.listeners)


def test_limits_and_durations(tmp_path: Path) -> None:
    loaded = read(tmp_path, "\n".join([
        "max_inflight_messages 0", "max_queued_messages 5000", "max_queued_bytes 1000000",
        "max_packet_size 2048", "message_size_limit 1024", "max_keepalive 120",
        "persistent_client_expiration 2w", "retain_available false", "sys_interval 0",
        "queue_qos0_messages true", "connection_messages false", "listener 1883",
        "max_qos 1", "max_topic_alias 5", "allow_anonymous true",
    ]))
    config = loaded.config
    assert config.max_inflight_messages == 65535
    assert (config.max_queued_messages, config.max_queued_bytes) == (5000, 1_000_000)
    assert (config.max_packet_size, config.message_size_limit) == (2048, 1024)
    assert config.persistent_client_expiration == 14 * 86400
    assert not config.retain_available and config.queue_qos0_messages
    assert (config.sys_interval, config.max_keepalive, config.connection_messages) == (
        0, 120, False)
    assert (config.max_qos, config.topic_alias_maximum) == (1, 5)


def test_logging(tmp_path: Path) -> None:
    config = read(tmp_path, "log_dest stdout\nlog_dest file /tmp/m.log\nlog_type error\n"
                            "log_type warning\n").config
    assert (config.log_dest, config.log_file, config.log_level) == (
        ("stdout",), "/tmp/m.log", "warning")
    verbose = read(tmp_path, "log_type all\n").config
    assert (verbose.log_level, verbose.log_packets) == ("debug", True)
    silent = read(tmp_path, "log_dest none\n").config
    assert (silent.log_dest, silent.log_file) == ((), None)


def test_notes_and_warnings_name_file_and_line(tmp_path: Path) -> None:
    loaded = read(tmp_path, "autosave_interval 60\n\nno_such_key 1\nmemory_limit 100\n"
                            "upgrade_outgoing_qos false\n")
    assert [(notice.level, notice.where, notice.key) for notice in loaded.notices] == [
        ("note", f"{tmp_path}/mosquitto.conf:1", "autosave_interval"),
        ("warning", f"{tmp_path}/mosquitto.conf:3", "no_such_key"),
        ("warning", f"{tmp_path}/mosquitto.conf:4", "memory_limit"),
    ]
    assert "journals" in loaded.notices[0].text
    assert str(loaded.notices[1]).endswith("no_such_key: unknown key, ignored")


@pytest.mark.parametrize(("line", "why"), [
    ("auth_plugin /usr/lib/auth.so", "cannot load Mosquitto's plugins"),
    ("auth_opt_backend mysql", "auth plugin"),
    ("psk_file /etc/psk", "pre-shared keys"),
    ("mount_point tenant/", "mount points"),
    ("crlfile /crl.pem", "revocation"),
    ("check_retain_source true", "retained"),
    ("tls_keyform engine", "OpenSSL engines"),
    ("clientid_prefixes secure-", "prefix"),
])
def test_security_keys_that_cannot_be_honoured_stop_the_start(tmp_path: Path, line: str,
                                                              why: str) -> None:
    message = error(tmp_path, f"listener 1883\n{line}\n")
    assert message.startswith(f"{tmp_path}/mosquitto.conf:2: {line.split()[0]}: ")
    assert why in message and "less securely than configured" in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="runs as root")
def test_user_is_refused_when_running_as_root(tmp_path: Path) -> None:
    assert "start it as 'mosquitto'" in error(tmp_path, "user mosquitto\n")


@pytest.mark.parametrize(("text", "message"), [
    ("listener 8883\ncertfile /c.pem\nuse_identity_as_username true\n",
     "mosquitto.conf:2: certfile: TLS needs both 'certfile' and 'keyfile'"),
    ("listener 8883\ncertfile /c.pem\nkeyfile /k.pem\nuse_identity_as_username true\n",
     "mosquitto.conf:4: use_identity_as_username: needs 'require_certificate: true'"),
    ("max_keepalive abc\n", "mosquitto.conf:1: max_keepalive: expected a whole number"),
    ("persistent_client_expiration 5\n", "expected a number followed by h, d, w, m or y"),
    ("listener 0 /run/mosquitto.sock\n", "unix socket listeners are not supported"),
    ("allow_anonymous yes\n", "mosquitto.conf:1: allow_anonymous: expected true or false"),
    ("address host:1883\n", "address: only in a bridge's section"),
    ("connection cloud\ntopic a/#\n", "mosquitto.conf:1: connection: bridge 'cloud' has no "
                                      "'address' line"),
    ("connection cloud\naddress host:99999\ntopic a/#\n",
     "mosquitto.conf:2: address: expected a port between 1 and 65535"),
    ("connection cloud\naddress h\ntopic a/# sideways\n", "expected the direction in, out"),
    ("connection cloud\naddress h\ntopic \"\" out 0 local/ \"\"\n",
     "mosquitto.conf:3: topic: an empty pattern"),
    ("connection cloud\naddress h\ntopic a/#\nbridge_certfile /c.pem\n",
     "mosquitto.conf:4: bridge_certfile: needs 'tls: true'"),
    ("connection a\naddress h\ntopic t\nconnection a\naddress h\ntopic t\n",
     "mosquitto.conf:4: connection: another bridge is called 'a'"),
])
def test_errors_name_the_line_and_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    assert message in error(tmp_path, text)


def test_include_dir_in_mosquittos_order_with_lines_of_each_file(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    for name, text in {"b.conf": "listener 1002\n", "A.conf": "listener 1001\n",
                       "a.conf": "\nunknown_thing 1\n", "README": "listener 9\n"}.items():
        (conf_d / name).write_text(text)
    loaded = read(tmp_path, f"allow_anonymous true\ninclude_dir {conf_d}\nlistener 1003\n")
    assert [listener.port for listener in loaded.config.listeners] == [1001, 1002, 1003]
    [notice] = loaded.notices
    assert notice.where == f"{conf_d}/a.conf:2"


def test_include_dir_must_exist(tmp_path: Path) -> None:
    assert "mosquitto.conf:1: include_dir: '/no/such/dir' is not a directory" in error(
        tmp_path, "include_dir /no/such/dir\n")


def test_bridge_section(tmp_path: Path) -> None:
    config = read(tmp_path, "\n".join([
        "listener 1883", "allow_anonymous true",
        "connection cloud",
        "address mqtt1.example.com:8883 mqtt2.example.com",
        "topic sensors/# out 1 site/ factory-7/",
        "topic commands/# in 2",
        'topic "" both 0 local/state remote/state',
        "topic everything",
        "bridge_protocol_version mqttv50", "cleansession true", "local_cleansession false",
        "keepalive_interval 30", "remote_clientid factory-7", "remote_username f7",
        "remote_password secret", "try_private false", "notifications_local_only true",
        "restart_timeout 2 20", "round_robin true", "start_type once",
        "bridge_cafile /ca.pem", "bridge_certfile /c.pem", "bridge_keyfile /k.pem",
        "bridge_insecure true", "bridge_tls_version tlsv1.3", "bridge_max_packet_size 9000",
        "bridge_outgoing_retain false", "local_username ignored", "max_keepalive 60",
    ])).config
    [bridge] = config.bridges
    assert config.max_keepalive == 60  # a global key after a section is still global
    assert bridge.addresses == ("mqtt1.example.com:8883", "mqtt2.example.com")
    out, incoming, one, everything = bridge.topics
    assert (out.direction, out.qos, out.local_filter, out.remote_filter) == (
        "out", 1, "site/sensors/#", "factory-7/sensors/#")
    assert out.to_remote("site/sensors/a/t") == "factory-7/sensors/a/t"
    assert (incoming.direction, incoming.qos) == ("in", 2)
    assert (one.local_filter, one.to_local("remote/state")) == ("local/state", "local/state")
    assert (everything.direction, everything.qos) == ("out", 0)  # Mosquitto's defaults
    assert (bridge.protocol_version, bridge.clean_session, bridge.local_clean) == (
        "mqttv50", True, False)
    assert (bridge.keepalive, bridge.remote_client_id, bridge.local_client_id) == (
        30, "factory-7", "local.factory-7")
    assert (bridge.remote_username, bridge.remote_password) == ("f7", "secret")
    assert not bridge.try_private and not bridge.notifications
    assert bridge.restart_timeout == (2.0, 20.0) and bridge.round_robin
    assert bridge.start_type == "once"
    assert (bridge.tls, bridge.cafile, bridge.certfile, bridge.keyfile) == (
        True, "/ca.pem", "/c.pem", "/k.pem")
    assert bridge.tls_insecure and bridge.tls_version == "tlsv1.3"
    assert (bridge.max_packet_size, bridge.outgoing_retain) == (9000, False)


def test_convert_prints_yaml_that_means_the_same(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.conf"
    path.write_text("listener 1884\nallow_anonymous true\nautosave_interval 10\n"
                    "connection cloud\naddress host\ntopic a/# both 1 l/ r/\n")
    text = mosquitto_as_yaml(path)
    assert f"# note: {path}:3: autosave_interval: accepted, not needed" in text
    assert parse_config(text) == read_config_file(path).config
    assert yaml.safe_load(text)["bridges"][0]["topics"] == [
        {"pattern": "a/#", "direction": "both", "qos": 1, "local_prefix": "l/",
         "remote_prefix": "r/"}]


def test_yaml_files_still_load(tmp_path: Path) -> None:
    loaded = read(tmp_path, "listeners:\n  - port: 1999\n", "mqttish.yaml")
    assert not loaded.mosquitto
    assert loaded.config == Config(listeners=parse_config(
        "listeners:\n  - port: 1999\n").listeners)


def test_persistence_keys(tmp_path: Path) -> None:
    loaded = read(tmp_path, "persistence true\npersistence_location /var/lib/mosquitto/\n"
                            "persistence_file mosquitto.db\nautosave_interval 1800\n")
    config = loaded.config
    assert (config.persistence, config.persistence_location, config.persistence_file) == (
        True, "/var/lib/mosquitto/", "mqttish.db")  # beside Mosquitto's own file
    assert [notice.key for notice in loaded.notices] == ["persistence_file",
                                                         "autosave_interval"]
    own = read(tmp_path, "persistence true\npersistence_file broker.db\n").config
    assert own.persistence_file == "broker.db"


def test_debians_own_mosquitto_conf(tmp_path: Path) -> None:
    """/etc/mosquitto/mosquitto.conf as Debian ships it (its paths moved into tmp_path)."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "README").write_text("Any files placed in this directory ending .conf ...\n")
    loaded = read(tmp_path, "\n".join([
        "# Place your local configuration in /etc/mosquitto/conf.d/",
        f"pid_file {tmp_path}/mosquitto.pid", "", "persistence true",
        f"persistence_location {tmp_path}/lib/", "",
        f"log_dest file {tmp_path}/mosquitto.log", "", f"include_dir {conf_d}", ""]))
    config = loaded.config
    assert config.persistence and config.persistence_location == f"{tmp_path}/lib/"
    assert (config.log_dest, config.log_file) == ((), f"{tmp_path}/mosquitto.log")
    assert [(listener.port, listener.bind) for listener in config.listeners] == [(1883, None)]
    assert [notice.key for notice in loaded.notices] == ["pid_file"]


def test_a_repeated_key_warns_and_the_last_value_applies(tmp_path: Path) -> None:
    loaded = read(tmp_path, "max_keepalive 60\nmax_keepalive 120\n")
    assert loaded.config.max_keepalive == 120
    [notice] = loaded.notices
    assert (notice.level, notice.where) == ("warning", f"{tmp_path}/mosquitto.conf:2")
    assert f"first at {tmp_path}/mosquitto.conf:1" in notice.text
