"""`python -m helpers.train --dataset DIR --format auto --out DIR` (see `helpers.train.cli`)."""
import sys

from helpers.train.cli import train_main

sys.exit(train_main())
