"""The MQTT wire format: packets, properties, reason codes, topics. Sans-IO: no trio, no clock."""
