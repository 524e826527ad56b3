"""RecordIO writing: Dataset.to_recordio against MXNet's im2rec on the same .lst, the same resize, quality and threads.

    .venv-gluon/bin/python benchmarks/bench_recordio.py --images 400 --resize 256

im2rec needs MXNet (the gluon extra's virtualenv); without it only this library's figures are printed. Each
configuration runs twice and the faster run counts (the first warms the page cache). Writes recordio.json.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import setup, write

from multilabel_ic._parallel import usable_cores

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--images", type=int, default=400)
ap.add_argument("--resize", type=int, default=256)
ap.add_argument("--quality", type=int, default=95)
ap.add_argument("--output", type=Path, default=Path("bench-output"))
args = ap.parse_args()
_, data = setup(args.output, args.images)
work = args.output / "recordio"
work.mkdir(parents=True, exist_ok=True)
lst = data.to_lst(work / "images.lst")
try:
    import mxnet  # noqa: F401

    have_mxnet = True
except ImportError:
    have_mxnet = False


def best_of_two(fn) -> float:
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


results = {}
for threads in sorted({1, usable_cores()}):
    ours = best_of_two(lambda threads=threads: data.to_recordio(work / "ours.rec", resize=args.resize,
                                                                quality=args.quality, threads=threads))
    row = {"multilabel_ic_images_per_sec": len(data) / ours}
    if have_mxnet:
        cmd = [sys.executable, "-m", "mxnet.tools.im2rec", "--pack-label", "--num-thread", str(threads), "--resize",
               str(args.resize), "--quality", str(args.quality), str(lst.with_suffix("")), str(data.root)]
        theirs = best_of_two(lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True))
        row.update(im2rec_images_per_sec=len(data) / theirs, ratio=theirs / ours)
    results[threads] = row
    print(f"{threads} thread(s): multilabel_ic {row['multilabel_ic_images_per_sec']:.0f} img/s"
          + (f", im2rec {row['im2rec_images_per_sec']:.0f} img/s, ratio {row['ratio']:.2f}" if have_mxnet
             else " (im2rec: MXNet is not installed here)"))
write(args.output, "recordio.json", {"images": len(data), "resize": args.resize, "quality": args.quality,
                                     "results": results})
