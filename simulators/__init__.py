"""Simulated IoT devices on `mqttish.client`, and the example systems built from them.

    python -m simulators sensor | monitor | actuator | fleet | scenario | jobs | orders

Each device is a real MQTT client that knows only topics: sensors publish
readings, the monitor turns threshold crossings into events, actuators react
to the events of their room. See docs/simulators.md and
docs/tutorial-temperature.md.
"""
