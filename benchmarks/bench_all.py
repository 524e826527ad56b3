"""Every benchmark, side by side (the same as `multilabel-ic bench`): python benchmarks/bench_all.py --quick"""

import sys

from multilabel_ic.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
