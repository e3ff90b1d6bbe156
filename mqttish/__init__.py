"""mqttish: an MQTT 3.1.1 and 5.0 broker in Python, built on trio."""

__version__ = "0.1.0"
