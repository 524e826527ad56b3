"""The two engines on SageMaker side by side: the built-in algorithm and this project's engine in SageMaker's PyTorch
container, each priced per epoch of the MS-COCO configuration from the packaged instance prices.

A real job's logs (``--sagemaker-job`` / ``--sagemaker-log``) give a row measured on SageMaker; without them the rows
come from published figures, each labelled with where it comes from. Nothing here is extrapolated silently: a row
says what it measured (which network, which precision) and which source it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PUBLIC_FIGURES", "engine_of_image", "public_rows", "cost_rows", "side_by_side_rows", "format_cost_table"]

# Published throughput (training images/s, all GPUs of the job), each with its source.
PUBLIC_FIGURES: list[dict[str, Any]] = [
    {"engine": "built-in", "instance_type": "ml.p3.2xlarge", "instance_count": 1, "images_per_sec": 112.0,
     "config": "ResNet-18 224 px fp32 (low)",
     "source": "public logs: AWS builtin_preprocess_and_train example, 112-147 samples/s"},
    {"engine": "built-in", "instance_type": "ml.p3.2xlarge", "instance_count": 1, "images_per_sec": 147.0,
     "config": "ResNet-18 224 px fp32 (high)",
     "source": "public logs: AWS builtin_preprocess_and_train example, 112-147 samples/s"},
    {"engine": "built-in", "instance_type": "ml.p3.16xlarge", "instance_count": 4, "images_per_sec": 26.0 * 32,
     "config": "ResNet-50 224 px (26 img/s per GPU)",
     "source": "public logs: 4 x ml.p3.16xlarge, about 26 img/s per GPU"},
    {"engine": "pytorch", "instance_type": "ml.p3.2xlarge", "instance_count": 1, "images_per_sec": 369.0,
     "config": "ResNet-50 224 px fp32",
     "source": "public benchmark: plain PyTorch ResNet-50 on one V100 (not a run of this engine)"},
    {"engine": "pytorch", "instance_type": "ml.p3.2xlarge", "instance_count": 1, "images_per_sec": 833.0,
     "config": "ResNet-50 224 px fp16",
     "source": "public benchmark: plain PyTorch ResNet-50 on one V100 (not a run of this engine)"},
]


def engine_of_image(image: str) -> str:
    """``pytorch`` for SageMaker's PyTorch training image (this project's engine), else ``built-in``."""
    return "pytorch" if "/pytorch-training:" in image else "built-in"


def _priced(row: dict, samples: int, prices: dict) -> dict:
    price = prices.get("per_hour", {}).get(row["instance_type"])
    ips = row.get("images_per_sec")
    seconds = samples / ips if ips else None
    return {**row, "seconds_per_epoch": seconds, "price_per_instance_hour": price,
            "cost_per_epoch": price * row["instance_count"] * seconds / 3600 if price is not None and seconds else None}


def public_rows(samples: int, prices: dict) -> list[dict]:
    """The published figures, each with its seconds and cost per epoch of ``samples`` images."""
    return [_priced(dict(r), samples, prices) for r in PUBLIC_FIGURES]


def cost_rows(samples: int, prices: dict, jobs: Sequence[dict] = ()) -> list[dict]:
    """Rows for both engines: real jobs' figures first (``jobs``: :func:`~.sagemaker.job_figures` dicts with an
    ``engine``), then the published ones. Every row is priced for an epoch of ``samples`` images."""
    measured = [_priced({"engine": j.get("engine", "built-in"), "instance_type": j["instance_type"],
                         "instance_count": j["instance_count"], "images_per_sec": j.get("images_per_sec"),
                         "config": "this job's configuration", "source": j["source"]}, samples, prices)
                for j in jobs]
    return measured + public_rows(samples, prices)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def side_by_side_rows(samples: int, prices: dict) -> list[dict]:
    """The published rows in the shape of ``bench``'s side-by-side table, labelled by their source."""
    return [{"where": f"SageMaker {r['instance_count']} x {r['instance_type']} ({r['engine']})", "config": r["config"],
             "measured_on": r["source"], "images_per_sec": r["images_per_sec"],
             "seconds_per_epoch": r["seconds_per_epoch"], "time_to_first_step_s": None,
             "cost_per_epoch": r["cost_per_epoch"]} for r in public_rows(samples, prices)]


def format_cost_table(rows: list[dict], samples: int, prices: dict) -> str:
    head = (f"{'engine':<9} {'instances':<20} {'what':<36} {'img/s':>7} {'s/epoch':>8} {'$/epoch':>8}  source")
    lines = [f"Cost per epoch of {samples} images (the MS-COCO configuration), {prices.get('currency', 'USD')} "
             f"on-demand prices of {prices.get('region', '?')} as of {prices.get('as_of', '?')}:", head,
             "-" * len(head)]
    for r in rows:
        where = f"{r['instance_count']} x {r['instance_type']}"
        lines.append(f"{r['engine']:<9} {where:<20} {r['config'][:36]:<36} {_fmt(r['images_per_sec'], '.0f'):>7} "
                     f"{_fmt(r['seconds_per_epoch'], '.1f'):>8} {_fmt(r['cost_per_epoch'], '.4f'):>8}  {r['source']}")
    return "\n".join(lines)

