"""Write a secured mqttish configuration for measuring what authorisation costs.

    python -m bench.auth_files DIR
    make bench ARGS="--scenario fan-in-qos0 --scenario fan-out-qos0 --broker mqttish \
        --mqttish-config DIR/mqttish-auth.yaml --no-docs"

The configuration is the one the harness gives mqttish in the windowed
scenarios (`Mqttish.config_text`) plus a password file of 10,000
users ($7$ hashes with Mosquitto 2.0's 101 iterations) and an ACL file of
1,000 rules: 900 for other users and 100 patterns that every client's checks
go through. The benchmark's clients connect anonymously (allowed), so every
delivery is checked against the anonymous rules and the patterns: the
fan-out path with an ACL, compared with the same scenario without one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

from bench.brokers import Mqttish
from bench.scenarios import WINDOWED_SETTINGS

USERS = 10_000
USER_RULES = 900
PATTERNS = 100


def _hash(password: str) -> str:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    passwd = directory / "passwd"
    passwd.write_text("".join(f"user{n}:{_hash(f'pw{n}')}\n" for n in range(USERS)))
    lines = ["topic readwrite bench/#"]  # the benchmark's anonymous clients
    for n in range(USER_RULES):
        lines += [f"user user{n}", f"topic readwrite fleet/{n}/#"]
    lines += [f"pattern read devices/%u/{n}/#" for n in range(PATTERNS)]
    acl = directory / "acl"
    acl.write_text("\n".join(lines) + "\n")
    config = directory / "mqttish-auth.yaml"
    base = Mqttish().config_text(1883, WINDOWED_SETTINGS)  # the harness passes -p PORT
    config.write_text(f"{base}\nallow_anonymous: true\npassword_file: {passwd}\n"
                      f"acl_file: {acl}\nmax_subscriptions_per_client: 0\n")
    return config


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-auth")))
