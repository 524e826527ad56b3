"""``python -m multilabel_ic.container``: the training job's entry point (see :mod:`.entry`)."""

import sys

from .entry import main

sys.exit(main())
