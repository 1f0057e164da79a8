"""`python -m helpers.train --dataset DIR --format auto --out DIR` (see `helpers.train.cli`);
`python -m helpers.train fetch-weights` gets the COCO weights (see `helpers.train.pretrained`)."""
import sys

if sys.argv[1:2] == ["fetch-weights"]:
    from helpers.train.pretrained import fetch_main

    sys.exit(fetch_main(sys.argv[2:]))

from helpers.train.cli import train_main

sys.exit(train_main())
