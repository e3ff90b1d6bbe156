import sys

from mqttish.cli import main

sys.exit(main())
