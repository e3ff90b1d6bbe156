"""Side-by-side benchmark harness: mqttish, Mosquitto and amqtt (docs/performance.md)."""
