"""Bridges: topics shared with other brokers (Mosquitto's `connection` sections)."""
