"""`python -m helpers.pipeline`: see helpers/pipeline/cli.py."""
import sys

from helpers.pipeline.cli import main

sys.exit(main())
