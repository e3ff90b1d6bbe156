"""A connection remembers its publish permissions only where the hooks' answers are stable."""

from __future__ import annotations

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.hooks import Access, ClientInfo, Decision, Hook, PublishGrants
from mqttish.protocol.packets import MQTT_5, PubAck, Publish
from mqttish.protocol.reason_codes import ReasonCode
from tests.unit.peer import Peer


class Rules(Hook):
    """Denies writes to the topics in `denied`; counts how often it is asked."""

    def __init__(self, stable: bool) -> None:
        self.stable_acl_answers = stable
        self.denied: set[str] = set()
        self.asked = 0

    def check_acl(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        if access is not Access.PUBLISH:
            return Decision.DEFER
        self.asked += 1
        return Decision.DENY if topic in self.denied else Decision.ALLOW


def _allowed(peer: Peer, topic: str, packet_id: int) -> bool:
    [ack] = peer.send(Publish(topic, b"x", qos=1, packet_id=packet_id))
    assert isinstance(ack, PubAck)
    assert ack.reason_code in (ReasonCode.NO_MATCHING_SUBSCRIBERS, ReasonCode.NOT_AUTHORIZED)
    return ack.reason_code != ReasonCode.NOT_AUTHORIZED


def test_stable_answers_are_asked_once_until_the_rules_change() -> None:
    rules = Rules(stable=True)
    broker = Broker(Config(), hooks=[rules])
    peer = Peer(broker, MQTT_5)
    peer.connect("device")
    assert all(_allowed(peer, "t", n) for n in (1, 2, 3))
    assert rules.asked == 1
    rules.denied.add("t")
    assert _allowed(peer, "t", 4)  # the rules said nothing yet
    broker.hooks.rules_changed()  # what a reload does
    assert not _allowed(peer, "t", 5)
    assert rules.asked == 2


def test_answers_that_may_change_are_asked_every_time() -> None:
    rules = Rules(stable=False)
    broker = Broker(Config(), hooks=[rules])
    peer = Peer(broker, MQTT_5)
    peer.connect("device")
    assert _allowed(peer, "t", 1)
    rules.denied.add("t")
    assert not _allowed(peer, "t", 2)
    assert rules.asked == 2


def test_grants_are_bounded_by_the_bytes_of_their_topics() -> None:
    grants = PublishGrants(0)
    topic = "t" * 1000
    for n in range(10):
        grants.remember(f"{n}{topic}", True)
    assert sum(map(len, grants.answers)) <= PublishGrants.LIMIT
    assert f"9{topic}" in grants.answers
    grants.remember("x" * (PublishGrants.LIMIT + 1), True)  # too long to keep
    assert sum(map(len, grants.answers)) <= PublishGrants.LIMIT
