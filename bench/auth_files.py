"""The password and ACL files of the auth scenarios (issue #15), made once per harness run.

Both brokers read the same files: Mosquitto's formats are mqttish's too.

- Password file: `users` users. `bench` (the benchmark's own clients, password
  `BENCH_PASSWORD`) and `user0`, `user1`, ... with passwords `pw0`, `pw1`, ...
  The plain file is hashed in bulk by `mosquitto_passwd -U`: `$7$` hashes
  (PBKDF2-SHA512, 101 iterations, Mosquitto 2.0's format). The argon2id file
  (`mqttish passwd`'s default, for login-storm-argon2id) has the same users;
  hashing 10,000 passwords with argon2id would take half an hour here, so the
  `userN` share one hash (of a password nobody sends): checking a wrong
  password costs the same either way, and that is what the storm measures.
- ACL file: `acl_rules` rules. `bench` may read and write `bench/#`; then one
  `topic readwrite fleet/N/#` rule each for as many `userN` as it takes; then a
  tenth of the rules as patterns (`pattern read devices/%u/N/#`), which every
  client's checks go through, the benchmark's included.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mqttish.auth.passwords import hash_password

BENCH_USER = "bench"
BENCH_PASSWORD = "bench-secret"
MOSQUITTO_PASSWD = "mosquitto_passwd"


class AuthFilesError(Exception):
    """The files could not be made (mosquitto_passwd missing or failing)."""


@dataclass(frozen=True, slots=True)
class AuthFiles:
    pbkdf2_passwords: Path  # $7$, made by mosquitto_passwd
    argon2id_passwords: Path
    acl: Path


def user_names(users: int) -> list[str]:
    """Every user in the password file, `bench` first."""
    return [BENCH_USER, *(f"user{n}" for n in range(users - 1))]


def make(directory: Path, users: int, acl_rules: int) -> AuthFiles:
    """The files for these sizes in `directory` (made if missing, else reused)."""
    directory = directory / f"auth-{users}-users-{acl_rules}-rules"
    files = AuthFiles(directory / "passwd-pbkdf2", directory / "passwd-argon2id",
                      directory / "acl")
    if all(path.exists() for path in (files.pbkdf2_passwords, files.argon2id_passwords,
                                      files.acl)):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    names = user_names(users)
    _write_pbkdf2(files.pbkdf2_passwords, names)
    shared = hash_password("nobody sends this one")
    lines = [f"{BENCH_USER}:{hash_password(BENCH_PASSWORD)}"]
    lines += [f"{name}:{shared}" for name in names[1:]]
    files.argon2id_passwords.write_text("\n".join(lines) + "\n")
    files.acl.write_text(acl_text(users, acl_rules))
    return files


def _write_pbkdf2(path: Path, names: list[str]) -> None:
    if shutil.which(MOSQUITTO_PASSWD) is None:
        raise AuthFilesError(f"{MOSQUITTO_PASSWD} not found: apt-get install mosquitto")
    plain = path.with_suffix(".tmp")
    plain.write_text(f"{BENCH_USER}:{BENCH_PASSWORD}\n"
                     + "".join(f"{name}:pw{name[4:]}\n" for name in names[1:]))
    result = subprocess.run([MOSQUITTO_PASSWD, "-U", str(plain)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise AuthFilesError(f"{MOSQUITTO_PASSWD} -U failed: {result.stderr.strip()}")
    plain.rename(path)


def acl_text(users: int, rules: int) -> str:
    patterns = rules // 10
    user_rules = min(rules - patterns - 1, users - 1)
    lines = [f"user {BENCH_USER}", "topic readwrite bench/#"]
    for n in range(user_rules):
        lines += [f"user user{n}", f"topic readwrite fleet/{n}/#"]
    lines += [f"pattern read devices/%u/{n}/#" for n in range(patterns)]
    return "\n".join(lines) + "\n"
