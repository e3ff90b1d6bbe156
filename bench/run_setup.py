"""What one run of an auth or persistence scenario adds to the broker settings, and removes.

The password and ACL files are made once per harness run (bench/auth_files.py);
a store directory is made fresh for every run, beside its logs, and deleted
after it, and mqttish gets a second listener that serves /metrics, where the
persistent scenarios read its commit latency.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from bench import auth_files
from bench.brokers import free_port
from bench.scenarios import AUTH, PERSISTENT, BrokerSettings, Params


def prepare(scenario: str, broker: str, settings: BrokerSettings, params: Params,
            results_dir: Path, port: int) -> BrokerSettings:
    if scenario in AUTH:
        files = auth_files.make(results_dir, params.users, params.acl_rules)
        passwords = (files.argon2id_passwords if scenario == "login-storm-argon2id"
                     else files.pbkdf2_passwords)
        settings = replace(settings, password_file=passwords, acl_file=files.acl)
    if scenario in PERSISTENT:
        store = results_dir / "logs" / f"store-{broker}-{port}"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        store.chmod(0o777)  # Mosquitto started as root writes as the user `mosquitto`
        settings = replace(settings, store=store,
                           metrics_port=free_port() if broker == "mqttish" else None)
    return settings


def finish(settings: BrokerSettings) -> None:
    """Delete the run's store (a restart run's holds hundreds of megabytes)."""
    if settings.store is not None:
        shutil.rmtree(settings.store, ignore_errors=True)
