"""Mosquitto's password file: `username:hash` lines, read, verified and written.

The hashes are the ones `mosquitto_passwd` writes, so a file can be brought
along unchanged:

- `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (Mosquitto 2.0's default);
- `$6$SALT$HASH`: one SHA-512 of password then salt (Mosquitto 1.6 and before);
- `$argon2id$v=19$m=...`: argon2id in its standard encoding (Mosquitto 2.1's
  default, and ours), verified by argon2-cffi.

Salts and hashes are standard base64. Verifying is slow on purpose: callers
run `verify` in a worker thread, never on the event loop. Comparisons are
constant-time, and an unknown user costs the same hashing as a known one, so
timing tells an attacker nothing about which users exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import argon2

PBKDF2_ITERATIONS = 10_000  # what we write; files keep whatever count they were made with
SALT_BYTES = 12  # as mosquitto_passwd
MAX_ITERATIONS = 10_000_000  # a hash asking for more is an attack on our CPU, not a password
_ARGON2 = argon2.PasswordHasher()


class PasswordFileError(ValueError):
    """A password file that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One user's stored hash, parsed once when the file is read."""

    encoded: str  # as in the file

    def matches(self, password: bytes) -> bool:
        """Whether `password` hashes to this; slow, and constant-time in the comparison."""
        encoded = self.encoded
        if encoded.startswith("$argon2"):
            try:
                return _ARGON2.verify(encoded, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False
        parts = encoded.split("$")
        if parts[1] == "7":
            iterations, salt, digest = int(parts[2]), _b64(parts[3]), _b64(parts[4])
            computed = hashlib.pbkdf2_hmac("sha512", password, salt, iterations)
        else:
            salt, digest = _b64(parts[2]), _b64(parts[3])
            computed = hashlib.sha512(password + salt).digest()
        return hmac.compare_digest(computed, digest)


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def parse_hash(encoded: str) -> PasswordHash:
    """Check that `encoded` is a hash we can verify; ValueError says why not."""
    if encoded.startswith("$argon2"):
        try:
            argon2.extract_parameters(encoded)
        except argon2.exceptions.InvalidHashError:
            raise ValueError("malformed argon2 hash") from None
        return PasswordHash(encoded)
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            if not 1 <= iterations <= MAX_ITERATIONS:
                raise ValueError(f"PBKDF2 iteration count {iterations} is out of range")
            _b64(parts[3])
            if len(_b64(parts[4])) != 64:
                raise ValueError("a $7$ hash is 64 bytes")
            return PasswordHash(encoded)
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            _b64(parts[2])
            if len(_b64(parts[3])) != 64:
                raise ValueError("a $6$ hash is 64 bytes")
            return PasswordHash(encoded)
    except binascii.Error:
        raise ValueError("salt or hash is not valid base64") from None
    raise ValueError("not a $7$, $6$ or $argon2id$ hash (plain-text passwords: "
                     "convert the file with 'mqttish passwd -U')")


class PasswordFile:
    """The users of one password file; immutable, so a reload swaps the whole table."""

    def __init__(self, users: Mapping[str, PasswordHash], path: str = "") -> None:
        self.users = dict(users)
        self.path = path
        # An unknown user is checked against some user's hash (the answer is ignored), so
        # that it costs as much as a known one.
        self._decoy = next(iter(self.users.values()), None)

    def verify(self, username: str, password: bytes | None) -> bool:
        """True if the user exists and the password is right. Slow: call it in a thread."""
        stored = self.users.get(username)
        if password is None:
            return False
        if stored is None:
            if self._decoy is not None:
                self._decoy.matches(password)
            return False
        return stored.matches(password)

    def __contains__(self, username: str) -> bool:
        return username in self.users


def parse_password_lines(lines: Iterable[str], source: str) -> PasswordFile:
    """Read `username:hash` lines; blank lines and `#` comments are skipped."""
    users: dict[str, PasswordHash] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, sep, encoded = line.partition(":")
        if not sep or not username:
            raise PasswordFileError(f"{source}:{number}: expected 'username:hash'")
        try:
            users[username] = parse_hash(encoded.strip())
        except ValueError as exc:
            raise PasswordFileError(f"{source}:{number}: user {username[:100]!r}: {exc}") from None
    return PasswordFile(users, source)


def load_password_file(path: str) -> PasswordFile:
    """Read a password file; PasswordFileError names the file (and line) on failure."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordFileError(f"cannot read password file {path}: {exc}") from None
    return parse_password_lines(text.splitlines(), path)


def hash_password(password: str, method: str = "argon2id") -> str:
    """A new hash in the file's encoding: argon2id, sha512-pbkdf2 ($7$) or sha512 ($6$)."""
    secret = password.encode()
    if method == "argon2id":
        return _ARGON2.hash(secret)
    salt = os.urandom(SALT_BYTES)
    salt_text = base64.b64encode(salt).decode()
    if method == "sha512-pbkdf2":
        digest = hashlib.pbkdf2_hmac("sha512", secret, salt, PBKDF2_ITERATIONS)
        return f"$7${PBKDF2_ITERATIONS}${salt_text}${base64.b64encode(digest).decode()}"
    if method == "sha512":
        digest = hashlib.sha512(secret + salt).digest()
        return f"$6${salt_text}${base64.b64encode(digest).decode()}"
    raise ValueError(f"unknown hash method {method!r}")
