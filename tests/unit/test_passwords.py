"""Password files as mosquitto_passwd writes them, and as `mqttish passwd` does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mqttish.auth.passwd_cli import main as passwd
from mqttish.auth.passwords import (
    PasswordFileError,
    hash_password,
    load_password_file,
    parse_password_lines,
)

needs_mosquitto_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="Debian's mosquitto not installed")


@needs_mosquitto_passwd
@pytest.mark.parametrize("method", ["sha512-pbkdf2", "sha512"])
def test_hashes_written_by_mosquitto_passwd_verify(tmp_path: Path, method: str) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-H", method, "-b", str(path), "alice", "s3cret"],
                   check=True)
    subprocess.run(["mosquitto_passwd", "-H", method, "-b", str(path), "bob", "hunter2"],
                   check=True)
    prefix = {"sha512-pbkdf2": "$7$", "sha512": "$6$"}[method]
    assert all(line.split(":", 1)[1].startswith(prefix)
               for line in path.read_text().splitlines())
    users = load_password_file(str(path))
    assert users.verify("alice", b"s3cret")
    assert users.verify("bob", b"hunter2")
    assert not users.verify("alice", b"hunter2")
    assert not users.verify("mallory", b"s3cret")
    assert not users.verify("alice", None)


@pytest.mark.parametrize("method", ["argon2id", "sha512-pbkdf2", "sha512"])
def test_our_hashes_verify(method: str) -> None:
    encoded = hash_password("pässword", method)
    users = parse_password_lines([f"carol:{encoded}"], "mem")
    assert users.verify("carol", "pässword".encode())
    assert not users.verify("carol", b"password")


def test_comments_and_blank_lines_are_skipped() -> None:
    encoded = hash_password("x", "sha512")
    users = parse_password_lines(["# users", "", f"dave:{encoded}", "  "], "mem")
    assert set(users.users) == {"dave"}


@pytest.mark.parametrize(("line", "problem"), [
    ("no-colon-here", "expected 'username:hash'"),
    ("erin:plaintext", "not a $7$, $6$ or $argon2id$ hash"),
    ("erin:$7$101$!!!$abc", "not valid base64"),
    ("erin:$7$0$AAAA$" + "A" * 88, "iteration count 0"),
    ("erin:$argon2id$v=19$garbage", "malformed argon2 hash"),
])
def test_errors_name_the_line(line: str, problem: str) -> None:
    with pytest.raises(PasswordFileError) as error:
        parse_password_lines(["# fine", line], "users.txt")
    assert str(error.value).startswith("users.txt:2:")
    assert problem in str(error.value)


@needs_mosquitto_passwd
def test_mqttish_passwd_mirrors_mosquitto_passwd(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert passwd(["-c", "-b", str(path), "alice", "one"]) == 0
    # mosquitto_passwd adds to our file, and we to its lines.
    subprocess.run(["mosquitto_passwd", "-b", str(path), "bob", "two"], check=True)
    assert passwd(["-H", "sha512", "-b", str(path), "carol", "three"]) == 0
    assert passwd(["-b", str(path), "alice", "uno"]) == 0  # a new password replaces the old
    users = load_password_file(str(path))
    assert users.verify("alice", b"uno") and users.verify("bob", b"two")
    assert users.verify("carol", b"three")
    assert passwd(["-D", str(path), "bob"]) == 0
    assert set(load_password_file(str(path)).users) == {"alice", "carol"}
    assert passwd(["-D", str(path), "bob"]) == 1
    assert path.stat().st_mode & 0o077 == 0


def test_mqttish_passwd_upgrades_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    kept = hash_password("old", "sha512")
    path.write_text(f"# plain\nfrank:letmein\ngrace:{kept}\n")
    assert passwd(["-U", "-H", "sha512-pbkdf2", str(path)]) == 0
    users = load_password_file(str(path))
    assert users.verify("frank", b"letmein")
    assert users.users["grace"].encoded == kept
    assert path.read_text().startswith("# plain\n")
