"""A Store that keeps its records in memory: state survives a broker restart
within one process (as in tests), not a process restart."""

from mqttish.persistence.store import Store, StoredMessage, StoredSession, StoredState


class MemoryStore(Store):
    def __init__(self) -> None:
        self.retained: dict[str, StoredMessage] = {}
        self.sessions: dict[str, StoredSession] = {}

    def load(self) -> StoredState:
        return StoredState(tuple(self.retained.values()), tuple(self.sessions.values()))

    def set_retained(self, topic: str, message: StoredMessage | None) -> None:
        if message is None:
            self.retained.pop(topic, None)
        else:
            self.retained[topic] = message

    def save_session(self, session: StoredSession) -> None:
        self.sessions[session.client_id] = session

    def delete_session(self, client_id: str) -> None:
        self.sessions.pop(client_id, None)
