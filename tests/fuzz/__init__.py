"""The fuzzer: malformed and mutated MQTT through the sans-IO core and a live broker.

`python -m tests.fuzz --help` runs it; docs/robustness.md describes it.
"""
