"""Local training throughput and the model-only ceiling, float32 and float16, in one run.

    python benchmarks/bench_training.py --batch 128 --steps 30 --device cuda
"""

import argparse
from pathlib import Path

from _common import setup, write

from multilabel_ic.backends.local.device import select_device
from multilabel_ic.backends.local.pipeline import default_workers
from multilabel_ic.bench.local import bench_ceiling, bench_training, image_store

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--images", type=int, default=400)
ap.add_argument("--device", default=None)
ap.add_argument("--workers", type=int, default=None)
ap.add_argument("--output", type=Path, default=Path("bench-output"))
ap.add_argument("--pipeline", choices=["batched", "reference"], default="batched")
args = ap.parse_args()
hp, data = setup(args.output, args.images, args.batch)
store = image_store(hp, data, args.output / "cache")[0] if args.pipeline == "batched" else None
results = {}
for precision in ("float32", "float16"):
    h = hp.replace(precision_dtype=precision)
    e2e = bench_training(h, data, device=args.device, steps=args.steps, warmup=args.warmup,
                         workers=args.workers if args.workers is not None
                         else default_workers(select_device(args.device), args.pipeline == "batched"),
                         pipeline=args.pipeline, store=store)
    ceiling = bench_ceiling(h, device=args.device, steps=args.steps, warmup=args.warmup)
    ratio = e2e["images_per_sec"]["median"] / ceiling["images_per_sec"]["median"]
    results[precision] = {"end_to_end": e2e, "ceiling": ceiling, "end_to_end_over_ceiling": ratio}
    print(f"{precision}: end-to-end {e2e['images_per_sec']['median']:.1f} img/s, ceiling "
          f"{ceiling['images_per_sec']['median']:.1f} img/s, ratio {ratio:.2f}")
write(args.output, "training.json", {"config": hp.to_sagemaker(), "results": results}, args.device)
