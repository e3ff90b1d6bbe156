"""`mqttish passwd`: mosquitto_passwd's command line for the same password file format.

    mqttish passwd [-H METHOD] [-c | -D] FILE USERNAME          (asks for the password)
    mqttish passwd [-H METHOD] [-c] -b FILE USERNAME PASSWORD
    mqttish passwd [-H METHOD] -U FILE                          (hash plain-text passwords)

Other lines of the file (comments, other users) are kept as they are. The
file is written to a temporary file beside it and renamed over it, so a broker
reloading at that moment reads the old file or the new one, never half of one.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mqttish.auth.passwords import hash_password, parse_hash

METHODS = ("argon2id", "sha512-pbkdf2", "sha512")


class PasswdError(Exception):
    """One line for stderr, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttish passwd", description="Manage a password file (mosquitto_passwd format).")
    parser.add_argument("-H", dest="method", choices=METHODS, default="argon2id",
                        help="hash to write (default: argon2id; Mosquitto 2.0 reads "
                        "sha512-pbkdf2 and sha512 only)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-c", dest="create", action="store_true",
                      help="create a new file (overwriting an existing one)")
    mode.add_argument("-D", dest="delete", action="store_true", help="delete the user")
    mode.add_argument("-U", dest="upgrade", action="store_true",
                      help="hash the plain-text passwords of a 'user:password' file")
    parser.add_argument("-b", dest="batch", action="store_true",
                        help="take the password from the command line")
    parser.add_argument("file")
    parser.add_argument("username", nargs="?")
    parser.add_argument("password", nargs="?")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except PasswdError as exc:
        print(f"mqttish passwd: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if args.upgrade:
        if args.username is not None:
            raise PasswdError("-U takes only the file")
        _write(path, [_upgraded(line, args.method) for line in _read(path)])
        return
    if not args.username or ":" in args.username:
        raise PasswdError("give a user name (without ':')")
    lines = [] if args.create else _read(path)
    kept = [line for line in lines if line.partition(":")[0] != args.username]
    if args.delete:
        if len(kept) == len(lines):
            raise PasswdError(f"user {args.username!r} is not in {path}")
        _write(path, kept)
        return
    password = args.password if args.batch else _ask()
    if password is None:
        raise PasswdError("-b needs the password after the user name")
    _write(path, [*kept, f"{args.username}:{hash_password(password, args.method)}"])


def _ask() -> str:
    password = getpass.getpass("Password: ")
    if getpass.getpass("Reenter password: ") != password:
        raise PasswdError("the passwords do not match")
    return password


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswdError(f"cannot read {path}: {exc}") from None


def _upgraded(line: str, method: str) -> str:
    username, sep, secret = line.partition(":")
    if not sep or line.lstrip().startswith("#"):
        return line
    try:
        parse_hash(secret)
        return line  # hashed already
    except ValueError:
        return f"{username}:{hash_password(secret, method)}"


def _write(path: Path, lines: list[str]) -> None:
    """Replace the file in one rename, readable by its owner only."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines))
        os.replace(temporary, path)
    except OSError as exc:
        raise PasswdError(f"cannot write {path}: {exc.strerror}") from None
