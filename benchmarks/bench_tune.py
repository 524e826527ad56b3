"""A local tuning study with and without the median pruner, on the demo's synthetic data (64 px), timed in one run.

    python benchmarks/bench_tune.py            # the measurement: 12 trials of 8 epochs, 800 of the demo's images
    python benchmarks/bench_tune.py --trials 2 --epochs 1 --num-images 120 --size 32  # a quick check that it works

Both studies use the same sampler seed, the same data, base hyperparameters (``make demo``'s: ResNet-18 at 64 px,
Adam, weighted loss, crop_color_transform) and search space (learning rate 1e-4..0.05 log, optimizer adam/sgd/
rmsprop, mini-batch 16..64, weight decay 0..0.001), objective validation mAP. The pruned study starts pruning after
``--startup`` trials, from epoch ``--warmup`` on. Per study: wall time, best objective, trials pruned, epochs trained
in all. Writes tune.json into ``--output``; docs/lifecycle.md quotes the figures.

The two studies run side by side, started together, each in its own process on its own half of the cores
(``os.sched_setaffinity``, torch threads to match), so that whatever else the machine does slows both alike;
``--sequential`` runs them one after the other on all the cores instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import write

from multilabel_ic import Dataset, Hyperparameters, setup_logging
from multilabel_ic.backends.local import LocalBackend, LocalOptions
from multilabel_ic.cli import DEMO_HP
from multilabel_ic.data.prepare import prepare_dataset
from multilabel_ic.tune import CategoricalRange, ContinuousRange, IntegerRange, Tuner


def study(name: str, args, hp: Hyperparameters, train, val, pruning: bool) -> dict:
    space = {"learning_rate": ContinuousRange(1e-4, 0.05, scaling="log"),
             "optimizer": CategoricalRange(["adam", "sgd", "rmsprop"]),
             "mini_batch_size": IntegerRange(16, 64), "weight_decay": ContinuousRange(0.0, 0.001)}
    # each study decodes its own cache (<study>/cache), so neither gains from the other's
    backend = LocalBackend(device=args.device, options=LocalOptions(seed=0, progress=False))
    started = time.perf_counter()
    result = Tuner(hp, space, objective="validation:mAP", max_trials=args.trials, backend=backend, seed=args.seed,
                   pruning=pruning, pruner_startup_trials=args.startup, pruner_warmup_epochs=args.warmup,
                   output_dir=args.output / name).fit(train, validation=val)
    wall = time.perf_counter() - started
    out = {"wall_s": round(wall, 1), "best_mAP": result.best_value,
           "best_trial": result.best_trial["number"] if result.best_trial else None,
           "best_params": result.best_trial["params"] if result.best_trial else None,
           "trials": len(result.trials), "pruned": sum(t["state"] == "PRUNED" for t in result.trials),
           "failed": sum(t["state"] == "FAIL" for t in result.trials),
           "epochs_trained": sum(t.get("epochs_trained") or 0 for t in result.trials)}
    print(f"{name}: {out}", flush=True)
    return out


def side_by_side(args) -> dict:
    """Both studies at once, each in a child process pinned to its own half of the cores."""
    cores = sorted(os.sched_getaffinity(0))
    halves = {"without": cores[: max(1, len(cores) // 2)], "with": cores[len(cores) // 2:] or cores}
    procs = {}
    for name, cpus in halves.items():
        cmd = [sys.executable, __file__, "--only", name, "--cpus", ",".join(map(str, cpus)),
               *[a for a in sys.argv[1:] if a != "--side-by-side"]]
        procs[name] = subprocess.Popen(cmd)
    for name, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"the {name}-pruning study failed (exit {proc.returncode})")
    return {f"{name}_pruning": json.loads((args.output / f"{name}-pruning.json").read_text()) for name in halves}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=8, help="epochs a trial (the demo trains 15)")
    ap.add_argument("--num-images", type=int, default=800, help="synthetic images (the demo makes 1000)")
    ap.add_argument("--size", type=int, default=64, help="image_shape's height and width (the demo's 64)")
    ap.add_argument("--startup", type=int, default=3, help="trials before the pruner prunes")
    ap.add_argument("--warmup", type=int, default=2, help="epochs before a trial can be pruned")
    ap.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed (both studies)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--output", type=Path, default=Path("bench-output/tune"))
    ap.add_argument("--sequential", action="store_true", help="one study after the other, on all the cores")
    ap.add_argument("--only", choices=["with", "without"], help=argparse.SUPPRESS)  # a side-by-side child
    ap.add_argument("--cpus", help=argparse.SUPPRESS)
    args = ap.parse_args()
    setup_logging(logging.WARNING)
    if args.cpus:
        import torch

        cpus = {int(c) for c in args.cpus.split(",")}
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(len(cpus))
    data = args.output / "data"
    if args.only:  # a side-by-side child reads what the parent prepared
        meta = json.loads((data / "dataset.json").read_text())
        train, val = (Dataset.from_lst(data / f"{split}.lst", root=meta["images"], class_names=meta["class_names"])
                      for split in ("train", "validation"))
    else:
        prepared = prepare_dataset(data, source="synthetic", num_images=args.num_images, seed=0, train_size=0.75,
                                   formats=("lst",), progress=False)
        train, val = prepared.train, prepared.validation
    base = {**DEMO_HP, "epochs": args.epochs, "image_shape": f"3,{args.size},{args.size}",
            "resize": args.size + args.size // 8}
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), **base)
    if args.only:
        out = study(f"{args.only}-pruning", args, hp, train, val, pruning=args.only == "with")
        (args.output / f"{args.only}-pruning.json").write_text(json.dumps(out))
        return
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("only", "cpus")},
              "hyperparameters": hp.to_sagemaker(), "cores": len(os.sched_getaffinity(0)),
              "loadavg_before": os.getloadavg()}
    if args.sequential:
        result["without_pruning"] = study("without-pruning", args, hp, train, val, pruning=False)
        result["with_pruning"] = study("with-pruning", args, hp, train, val, pruning=True)
    else:
        result.update(side_by_side(args))
    result["loadavg_after"] = os.getloadavg()
    a, b = result["without_pruning"], result["with_pruning"]
    result["speedup"] = round(a["wall_s"] / b["wall_s"], 3) if b["wall_s"] else None
    result["best_mAP_difference"] = (None if a["best_mAP"] is None or b["best_mAP"] is None
                                     else round(b["best_mAP"] - a["best_mAP"], 4))
    print(f"pruning: {b['wall_s']} s vs {a['wall_s']} s without (x{result['speedup']}); best mAP "
          f"{b['best_mAP']} vs {a['best_mAP']} (difference {result['best_mAP_difference']})", flush=True)
    write(args.output, "tune.json", result, args.device)


if __name__ == "__main__":
    main()
