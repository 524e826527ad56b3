"""Input pipeline alone: multilabel_ic's OpenCV pipeline against PIL + torchvision, per augmentation type.

    python benchmarks/bench_pipeline.py --images 512 --workers 4
"""

import argparse
from pathlib import Path

from _common import setup, write

from multilabel_ic.bench.local import bench_pipeline

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--images", type=int, default=512)
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--output", type=Path, default=Path("bench-output"))
args = ap.parse_args()
hp, data = setup(args.output, min(args.images, 400))
result = bench_pipeline(hp, data, n_images=args.images, workers=args.workers, batch=args.batch)
for aug, r in result["results"].items():
    print(f"{aug:<22} multilabel_ic {r['multilabel_ic']['images_per_sec']:.1f} img/s   PIL+torchvision "
          f"{r['pil_torchvision']['images_per_sec']:.1f} img/s   ratio {r['ratio']:.2f}")
write(args.output, "pipeline.json", {"config": hp.to_sagemaker(), **result})
