"""`python -m helpers.device.agent`: run the edge agent (see `helpers.device.agent.cli`)."""
import sys

from helpers.device.agent.cli import main

sys.exit(main())
