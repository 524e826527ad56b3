"""The parity report (the same as `multilabel-ic parity`), run in the MXNet virtualenv:

    .venv-gluon/bin/python benchmarks/parity.py --seeds 3 --output parity-output
"""

import sys

from multilabel_ic.cli import main

if __name__ == "__main__":
    sys.exit(main(["parity", *sys.argv[1:]]))
