"""The broker's own security hook: passwords, client certificates and ACLs per listener.

Each listener has its rules: whether anonymous clients may connect, a
password file, an ACL file (each the listener's own or the global one) and
whether its clients are named by their certificate. Files shared by several
listeners are read once.

A reload reads every file again and swaps all the rules at once, or, if any
file fails, none: the old rules stay in force and the error names the file
and line. It never fails open (compare Mosquitto #588).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mqttish.auth.acl import (
    CLIENT_CACHE_SIZE,
    TOPIC_CACHE_SIZE,
    AclChecker,
    AclFileError,
    Want,
    load_acl_file,
)
from mqttish.auth.passwords import PasswordFile, PasswordFileError, load_password_file
from mqttish.config import Config
from mqttish.core.hooks import INTERNAL_LISTENER, Access, ClientInfo, Decision, Hook
from mqttish.protocol.packets import Connect
from mqttish.protocol.topics import SHARE_PREFIX

log = logging.getLogger("mqttish.auth")

_WANTS = {Access.PUBLISH: Want.WRITE, Access.SUBSCRIBE: Want.SUBSCRIBE, Access.READ: Want.READ}


class SecurityFileError(ValueError):
    """A password or ACL file could not be used; the message names file and line."""


@dataclass(frozen=True, slots=True)
class ListenerRules:
    allow_anonymous: bool
    certificate_username: bool  # the transport puts the certificate's name in `username`
    passwords: PasswordFile | None
    acl: AclChecker | None


class SecurityHook(Hook):
    stable_acl_answers = True  # a reload calls HookChain.rules_changed

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules = self.read_rules()
        # The answers of check_acl, per client (by the identity of its ClientInfo, which
        # lives as long as its session) and kind of access: the delivery path's fast way.
        self._answers: dict[int, tuple[ClientInfo, dict[Access, dict[str, Decision]]]] = {}

    def apply(self, new: list[ListenerRules]) -> dict[int, set[str]]:
        """Put rules made by `read_rules` in force. Returns, per listener index, the
        users no longer in its password file (their clients should be disconnected)."""
        old = self.rules
        self.rules = new  # one assignment: every check sees the old rules or the new
        self._answers = {}
        removed: dict[int, set[str]] = {}
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            if before.passwords is not None:
                kept = after.passwords.users if after.passwords is not None else {}
                gone = set(before.passwords.users) - set(kept)
                if gone:
                    removed[index] = gone
        return removed

    def read_rules(self) -> list[ListenerRules]:
        """Read every file; SecurityFileError if any fails. Blocking, and safe to run in
        a worker thread (it changes nothing)."""
        config = self.config
        passwords: dict[str, PasswordFile] = {}
        acls: dict[str, AclChecker] = {}
        rules = []
        try:
            for listener in config.listeners:
                password_path = config.password_file_for(listener)
                if password_path is not None and password_path not in passwords:
                    passwords[password_path] = load_password_file(password_path)
                acl_path = config.acl_file_for(listener)
                if acl_path is not None and acl_path not in acls:
                    acls[acl_path] = AclChecker(load_acl_file(acl_path))
                rules.append(ListenerRules(
                    allow_anonymous=config.anonymous_allowed(listener),
                    certificate_username=listener.certificate_username,
                    passwords=passwords[password_path] if password_path is not None else None,
                    acl=acls[acl_path] if acl_path is not None else None,
                ))
        except (PasswordFileError, AclFileError) as exc:
            raise SecurityFileError(str(exc)) from None
        return rules

    def authenticate_blocking(self, client: ClientInfo, connect: Connect) -> Decision:
        if client.listener == INTERNAL_LISTENER:  # a bridge's in-process link
            return Decision.ALLOW
        rules = self.rules[client.listener]
        if rules.certificate_username:
            # The name is the verified certificate's; the transport refuses clients without one.
            return Decision.ALLOW if client.username is not None else Decision.DENY
        if connect.username is None or rules.passwords is None:
            return Decision.ALLOW if rules.allow_anonymous else Decision.DENY
        if rules.passwords.verify(connect.username, connect.password):
            return Decision.ALLOW
        return Decision.DENY

    def check_acl(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        entry = self._answers.get(id(client))
        if entry is None or entry[0] is not client:
            if len(self._answers) >= CLIENT_CACHE_SIZE:
                self._answers.clear()
            entry = self._answers[id(client)] = (client, {want: {} for want in Access})
        answers = entry[1][access]
        answer = answers.get(topic)
        if answer is None:
            if len(answers) >= TOPIC_CACHE_SIZE:
                answers.clear()
            answer = answers[topic] = self._decide(client, topic, access)
        return answer

    def _decide(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        if client.listener == INTERNAL_LISTENER:
            return Decision.ALLOW
        acl = self.rules[client.listener].acl
        if acl is None:
            return Decision.DEFER
        if access is Access.SUBSCRIBE and topic.startswith(SHARE_PREFIX):
            topic = topic.split("/", 2)[2]  # a shared subscription: its filter decides
        if acl.allowed(client.username, client.client_id, topic, _WANTS[access]):
            return Decision.ALLOW
        return Decision.DENY
