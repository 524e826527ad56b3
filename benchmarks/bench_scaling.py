"""Local training images/s with 1 and N processes (DDP under torchrun), side by side, and the scaling efficiency:

    python benchmarks/bench_scaling.py 2 [--device cuda] [--output bench-output]
"""

import sys

from multilabel_ic.cli import main

if __name__ == "__main__":
    n, *rest = sys.argv[1:] or ["2"]
    sys.exit(main(["bench", "--scaling", n, *rest]))
