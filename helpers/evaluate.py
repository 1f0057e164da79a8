"""`python -m helpers.evaluate --model DIR --dataset DIR [--format auto] [--json OUT]`.

Prints the evaluation report (P/R/F1 at IoU 0.5, mAP, confusion matrix, latency) as JSON.
The library API is `helpers.train.evaluate`.
"""
from __future__ import annotations

import sys

from helpers.train.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
