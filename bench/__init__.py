"""Side-by-side benchmark harness: mqttish, Mosquitto, aedes and amqtt (docs/performance.md)."""
