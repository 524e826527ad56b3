"""SageMaker figures from a saved CloudWatch log export of a training job.

    python benchmarks/bench_sagemaker_logs.py job.log --instance-type ml.p3.2xlarge --created 2026-11-20T09:58:00Z
"""

import argparse
import json
from pathlib import Path

from multilabel_ic.bench.sagemaker import figures_from_log_file, load_prices

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("log", type=Path)
ap.add_argument("--instance-type", default="ml.p3.2xlarge")
ap.add_argument("--instance-count", type=int, default=None)
ap.add_argument("--created", default=None, help="the job's CreationTime (ISO 8601), for the time to first step")
ap.add_argument("--billable-seconds", type=float, default=None)
ap.add_argument("--prices", type=Path, default=None)
ap.add_argument("--output", type=Path, default=Path("bench-output/sagemaker.json"))
args = ap.parse_args()
fig = figures_from_log_file(args.log, instance_type=args.instance_type, instance_count=args.instance_count,
                            created=args.created, billable_seconds=args.billable_seconds,
                            prices=load_prices(args.prices))
print(json.dumps({k: fig[k] for k in ("instance_type", "instance_count", "images_per_sec", "seconds_per_epoch",
                                      "time_to_first_step_s", "cost_per_epoch")}, indent=2))
args.output.parent.mkdir(parents=True, exist_ok=True)
args.output.write_text(json.dumps(fig, indent=2) + "\n")
