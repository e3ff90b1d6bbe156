"""Every key of mosquitto.conf (Mosquitto 2.0), and what mqttish does with it.

Supported keys have a handler in `translate.py`; this module says what
happens to the others, and why, in the words the user sees:

- IGNORED: accepted with a note. The key means nothing here (mqttish journals
  instead of saving every `autosave_interval`), or says what mqttish always does.
- UNSUPPORTED: accepted with a warning naming the file and line. The broker
  runs, but not quite as Mosquitto would; nothing about it is less secure.
- REFUSED: the broker does not start. The key concerns security (who may
  connect, what they may see, how the traffic is protected) and mqttish cannot
  honour it, so running without it would be less secure than configured.

docs/mosquitto-migration.md lists the same keys; a test keeps the two in step.
"""

from __future__ import annotations

IGNORED: dict[str, str] = {
    "allow_duplicate_messages": "deprecated in Mosquitto; mqttish sends a message once to a "
                                "client whose subscriptions overlap, as MQTT asks",
    "autosave_interval": "mqttish journals every change as it happens, committed in groups: "
                         "there is no in-memory database to save periodically",
    "autosave_on_changes": "mqttish journals every change as it happens",
    "auth_plugin_deny_special_chars": "applies to auth plugins, which mqttish does not load",
    "dhparamfile": "mqttish offers ECDHE key exchange (forward secrecy) without DH parameters",
    "idle_timeout": "applies to 'start_type lazy' bridges",
    "local_password": "the bridge's link to this broker is in-process and trusted, "
                      "as Mosquitto's own bridges are",
    "local_username": "the bridge's link to this broker is in-process and trusted, "
                      "as Mosquitto's own bridges are",
    "log_facility": "mqttish does not log to syslog",
    "log_timestamp": "mqttish's log lines always start with a timestamp",
    "log_timestamp_format": "mqttish's log lines always start with an ISO 8601 timestamp",
    "pid_file": "mqttish stays in the foreground and writes no pid file; a service manager "
                "(systemd) knows its process",
    "retry_interval": "removed from Mosquitto; messages are re-sent when a client reconnects",
    "set_tcp_nodelay": "mqttish always sets TCP_NODELAY",
    "store_clean_interval": "removed from Mosquitto",
    "threshold": "applies to 'start_type lazy' bridges",
    "websockets_headers_size": "mqttish reads HTTP request heads up to the listener's "
                               "max_handshake_size (16 KiB)",
    "websockets_log_level": "applies to libwebsockets, which mqttish does not use",
}

UNSUPPORTED: dict[str, str] = {
    "auto_id_prefix": "mqttish names clients without an id 'mqttish-<random>'",
    "http_dir": "mqttish serves no files over HTTP (its websocket listeners from a "
                "mosquitto.conf serve neither the dashboard nor /metrics)",
    "max_inflight_bytes": "mqttish limits messages in flight by count (max_inflight_messages)",
    "memory_limit": "mqttish bounds memory per client by its queue limits instead "
                    "(max_queued_messages, max_queued_bytes, max_packet_size)",
    "upgrade_outgoing_qos": "mqttish delivers at most at the QoS a message was published "
                            "with, as MQTT asks",
}

REFUSED: dict[str, str] = {
    "auth_plugin": "mqttish cannot load Mosquitto's plugins: use password_file and acl_file, "
                   "or an mqttish hook",
    "auth_opt_": "options of an auth plugin, which mqttish cannot load",
    "bind_interface": "mqttish cannot bind to an interface by name: give its address "
                      "('listener PORT ADDRESS') instead",
    "bridge_identity": "TLS with pre-shared keys is not supported: use certificates "
                       "(bridge_cafile, bridge_certfile, bridge_keyfile)",
    "bridge_psk": "TLS with pre-shared keys is not supported: use certificates "
                  "(bridge_cafile, bridge_certfile, bridge_keyfile)",
    "bridge_require_ocsp": "mqttish cannot check OCSP for a bridge",
    "capath": "mqttish trusts client certificates from one file: concatenate the CA "
              "certificates into one and name it with cafile",
    "check_retain_source": "mqttish does not check again that the publisher of a retained "
                           "message may still publish there (it checks that the subscriber "
                           "may read it); remove the line to accept that",
    "ciphers_tls1.3": "mqttish cannot restrict TLS 1.3 cipher suites (it uses OpenSSL's, "
                      "all of them strong)",
    "clientid_prefixes": "mqttish cannot restrict client ids by prefix: use an acl_file "
                         "'pattern' rule with %c instead",
    "crlfile": "mqttish cannot check certificate revocation lists",
    "global_plugin": "mqttish cannot load Mosquitto's plugins",
    "mount_point": "mqttish has no mount points, which keep clients of a listener apart",
    "plugin": "mqttish cannot load Mosquitto's plugins: use password_file and acl_file, "
              "or an mqttish hook",
    "plugin_opt_": "options of a plugin, which mqttish cannot load",
    "psk_file": "TLS with pre-shared keys is not supported: use certificates",
    "psk_hint": "TLS with pre-shared keys is not supported: use certificates",
    "tls_engine": "mqttish cannot use OpenSSL engines: give the key in a PEM keyfile",
    "tls_engine_kpass_sha1": "mqttish cannot use OpenSSL engines",
    "use_username_as_clientid": "mqttish cannot replace client ids by user names",
}

# Prefixes of key families (auth_opt_NAME, plugin_opt_NAME).
REFUSED_PREFIXES = ("auth_opt_", "plugin_opt_")


def refusal(key: str) -> str | None:
    """Why `key` stops the broker from starting, if it does."""
    if key in REFUSED:
        return REFUSED[key]
    for prefix in REFUSED_PREFIXES:
        if key.startswith(prefix):
            return REFUSED[prefix]
    return None
