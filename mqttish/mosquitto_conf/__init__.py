"""Mosquitto's configuration file, read into mqttish's own configuration.

`translate(path)` reads a mosquitto.conf (and the files its `include_dir`
lines name) into the same dict the YAML loader builds, so one path validates
both (typed_yaml into `Config`), and `mqttish convert` prints it as YAML.
Every key Mosquitto knows is classified in `keys.py`: supported, accepted and
ignored (it means nothing here), not supported (a warning), or refused (it
concerns security and mqttish cannot honour it, so the broker does not start).
"""

from mqttish.mosquitto_conf.detect import looks_like_mosquitto
from mqttish.mosquitto_conf.translate import Notice, Translation, translate

__all__ = ["Notice", "Translation", "looks_like_mosquitto", "translate"]
