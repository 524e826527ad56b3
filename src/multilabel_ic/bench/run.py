"""``multilabel-ic bench``: run the benchmarks, print a side-by-side table, write ``bench.json`` and ``bench.png``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_text
from ..exceptions import UsageError
from .common import machine_info, stats

__all__ = ["run_bench", "side_by_side", "write_report", "sagemaker_cost", "COCO5_BENCH_HP", "COCO5_SAMPLES"]

log = logging.getLogger("multilabel_ic.bench")

# The MS-COCO example's configuration (use_pretrained_model does not change throughput and needs weights).
COCO5_SAMPLES = 2500  # training images per epoch
COCO5_BENCH_HP = dict(num_layers=18, image_shape="3,224,224", num_classes=5, mini_batch_size=128, resize=256,
                      epochs=5, learning_rate=0.001, num_training_samples=COCO5_SAMPLES, use_weighted_loss=1,
                      augmentation_type="crop_color_transform", precision_dtype="float32", multi_label=1)

QUICK: dict[str, Any] = dict(num_images=48, batch=16, steps=6, warmup=2, window=2, pipeline_images=64, single=20,
                             pairs=2, inference_rounds=2)
FULL: dict[str, Any] = dict(num_images=400, batch=None, steps=30, warmup=5, window=5, pipeline_images=512, single=100,
                            pairs=2, inference_rounds=5)


def side_by_side(local: list[dict], sagemaker: list[dict]) -> list[dict]:
    """One row per configuration: where it ran, images/s, seconds/epoch, time to first step, cost per epoch."""
    rows = []
    for r in local:
        rows.append({"where": f"local {r['device_name']}", "config": r["label"], "measured_on": r["machine"],
                     "images_per_sec": r["images_per_sec"], "seconds_per_epoch": r["seconds_per_epoch"],
                     "time_to_first_step_s": r.get("time_to_first_step_s"), "cost_per_epoch": None})
    for s in sagemaker:
        rows.append({"where": f"SageMaker {s['instance_count']} x {s['instance_type']}", "config": s["source"],
                     "measured_on": "SageMaker (from the job's logs)", "images_per_sec": s["images_per_sec"],
                     "seconds_per_epoch": s["seconds_per_epoch"], "time_to_first_step_s": s["time_to_first_step_s"],
                     "cost_per_epoch": s["cost_per_epoch"]})
    return rows


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict]) -> str:
    head = f"{'where':<46} {'config':<28} {'img/s':>8} {'s/epoch':>9} {'1st step s':>10} {'$/epoch':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['where'][:46]:<46} {str(r['config'])[:28]:<28} {_fmt(r['images_per_sec']):>8} "
                     f"{_fmt(r['seconds_per_epoch']):>9} {_fmt(r['time_to_first_step_s']):>10} "
                     f"{_fmt(r['cost_per_epoch'], '.3f'):>8}")
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    atomic_write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
    png_path = out_dir / "bench.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["side_by_side"] if r["images_per_sec"]]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * max(len(rows), 1)))
    labels = [f"{r['where']}\n{r['config']}" for r in rows]
    values = [r["images_per_sec"] for r in rows]
    colors = ["tab:blue" if r["where"].startswith("local") else "tab:orange" for r in rows]
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training images/s (different machines: see labels; nothing extrapolated)")
    ax.set_title(f"multilabel_ic throughput - {report['machine']['date'][:10]}", fontsize=10)
    fig.tight_layout()
    with atomic_write(png_path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return json_path, png_path


def _ratio(a: dict, b: dict) -> float | None:
    x, y = a["images_per_sec"]["median"], b["images_per_sec"]["median"]
    return x / y if x and y else None


def run_bench(args) -> dict:
    import torch

    from ..backends.local.pipeline import default_workers
    from ..cli_args import hyperparameters_from_args
    from ..data.dataset import Dataset
    from ..data.synthetic import COCO5, generate_coco
    from ..model.artifact import write_model_tar
    from ..model.network import mxnet_state_dict
    from . import local as L
    from .sagemaker import figures_from_job, figures_from_log_file, load_prices

    cfg = dict(QUICK if args.quick else FULL)
    if getattr(args, "steps", None) is not None:
        if args.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {args.steps}")
        cfg["steps"] = args.steps
    out = Path(args.output)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = dict(COCO5_BENCH_HP)
    if cfg["batch"]:
        base["mini_batch_size"] = cfg["batch"]
    hp = hyperparameters_from_args(args, num_classes=5, num_training_samples=2500, defaults=base)
    ann, images = generate_coco(out / "data", num_images=cfg["num_images"], seed=0)
    data = Dataset.from_coco(ann, images=images, categories=COCO5)
    workers = max(1, default_workers())  # the reference pipeline's and the plain loop's
    batched_workers = default_workers(torch.device(device), batched=True)
    machine = machine_info(device)
    report = {"machine": machine, "mode": "quick" if args.quick else "full", "config": hp.to_sagemaker(),
              "settings": cfg, "local": [], "sagemaker": []}
    print(f"benchmarking on {machine['device_name']} ({report['mode']}): ResNet-{hp.num_layers} "
          f"{hp.image_shape}, batch {hp.mini_batch_size}, {hp.augmentation_type}, loader workers: "
          f"{batched_workers} batched, {workers} reference and plain loop",
          flush=True)
    store, cache_seconds = L.image_store(hp, data, out / "cache")
    report["decode_cache"] = {"images": len(store), "bytes": store.nbytes, "build_seconds": cache_seconds,
                              "path": str(store.path)}
    jpeg_store, _ = L.image_store(hp, data, out / "cache", encoding="jpeg")
    host = report["host"] = L.bench_host(hp, data, store, n_images=cfg["pipeline_images"], jpeg_store=jpeg_store)
    print(f"  host CPU per training image: {host['batched_host_ms']:.3f} ms batched (cache read "
          f"{host['cache_read_ms']:.3f} ms), {host['reference_host_ms']:.3f} ms reference (decode + augment); "
          f"{host['reference_over_batched']:.1f}x less; from the JPEG cache (data over the raw cache's limit) "
          f"{host['jpeg_batched_host_ms']:.3f} ms ({host['jpeg_cache_bytes_per_image'] / 1e3:.0f} KB per image "
          f"against {host['cache_bytes_per_image'] / 1e3:.0f}; pixels {host['jpeg_abs_diff_levels']['mean']:.2f} "
          f"grey levels from the raw cache's on average)", flush=True)
    aug = report["device_augment"] = L.bench_device_augment(hp, data, store, device=device)
    tensor_rate = aug.get("tensor_method_images_per_sec")
    print(f"  batched augmentation on {device} ({aug['method']}): {aug['images_per_sec']['median']:.0f} img/s"
          + (f"; tensor method (a GPU's) {tensor_rate['median']:.0f} img/s" if tensor_rate else ""), flush=True)
    for precision in ("float32", "float16"):
        h = hp.replace(precision_dtype=precision)
        log.info("training throughput, %s ...", precision)
        model_timing = dict(device=device, steps=cfg["steps"], warmup=cfg["warmup"], window=cfg["window"])
        timing = {**model_timing, "workers": workers}
        e2e = L.bench_training(h, data, store=store, **{**timing, "workers": batched_workers})
        ceiling = L.bench_ceiling(h, **model_timing)
        ratio = _ratio(e2e, ceiling)
        label = f"{precision if precision == 'float32' or device.startswith('cuda') else 'float16->bf16 (CPU)'}" \
                f" b{h.mini_batch_size}"
        entry: dict[str, Any] = {"label": label, "precision": precision, "device_name": machine["device_name"],
                                 "machine": machine["hostname"], "end_to_end": e2e, "ceiling": ceiling,
                                 "end_to_end_over_ceiling": ratio,
                                 "images_per_sec": e2e["images_per_sec"]["median"],
                                 "seconds_per_epoch": e2e["epoch_seconds_from_median_step"],
                                 "time_to_first_step_s": e2e["time_to_first_step_s"]}
        print(f"  {label}: end-to-end {e2e['images_per_sec']['median']:.1f} img/s, model-only ceiling "
              f"{ceiling['images_per_sec']['median']:.1f} img/s, ratio {ratio:.2f}, waiting for batches "
              f"{e2e['data_wait_fraction']:.0%} of step time", flush=True)
        if precision == "float32":
            # the peers, paired: this engine's run, the ceiling's and the plain loop's alternate, so drift on the
            # machine hits them alike; the ratios are quoted per pair
            pairs: list[dict[str, Any]] = []
            for _ in range(cfg["pairs"]):
                ours = e2e if not pairs else L.bench_training(h, data, store=store,
                                                              **{**timing, "workers": batched_workers})
                its_ceiling = ceiling if not pairs else L.bench_ceiling(h, **model_timing)
                plain = L.bench_plain_loop(h, data, **timing)
                pairs.append({"multilabel_ic": ours["images_per_sec"]["median"],
                              "plain_pytorch": plain["images_per_sec"]["median"],
                              "ratio": _ratio(ours, plain), "plain_detail": plain,
                              "ceiling": its_ceiling["images_per_sec"]["median"],
                              "over_ceiling": _ratio(ours, its_ceiling)})
            over_ceiling = [p["over_ceiling"] for p in pairs if p["over_ceiling"]]
            entry["end_to_end_over_ceiling_pairs"] = over_ceiling
            entry["end_to_end_over_ceiling"] = stats(over_ceiling)["median"]
            if batched_workers == 0 and not device.startswith("cuda"):  # a synchronous pipeline: interleave too
                inter = entry["interleaved"] = L.bench_interleaved(h, data, store, **model_timing)
                print(f"  float32 end-to-end and ceiling steps alternating in one loop: end-to-end / ceiling "
                      f"{inter['end_to_end_over_ceiling']:.2f} (median of {len(inter['ratio_per_window'])} windows; "
                      f"{inter['end_to_end_images_per_sec']['median']:.1f} / "
                      f"{inter['ceiling_images_per_sec']['median']:.1f} img/s)", flush=True)
            reference = L.bench_training(h, data, pipeline="reference", **timing)
            if getattr(args, "compile", False):
                # the same step with the network through torch.compile, measured right after the eager one
                compiled = L.bench_training(h, data, store=store, compile=True,
                                            **{**timing, "workers": batched_workers})
                compiled_ceiling = L.bench_ceiling(h, **model_timing, compile=True)
                entry["compiled"] = {"end_to_end": compiled, "ceiling": compiled_ceiling,
                                     "end_to_end_over_eager": _ratio(compiled, e2e),
                                     "ceiling_over_eager": _ratio(compiled_ceiling, ceiling)}
                print(f"  float32 with torch.compile: end-to-end {compiled['images_per_sec']['median']:.1f} img/s "
                      f"({entry['compiled']['end_to_end_over_eager']:.2f}x eager), ceiling "
                      f"{compiled_ceiling['images_per_sec']['median']:.1f} img/s "
                      f"({entry['compiled']['ceiling_over_eager']:.2f}x eager); first step after "
                      f"{compiled['time_to_first_step_s']:.0f} s (compiling)", flush=True)
            entry["plain_pytorch_pairs"] = pairs
            entry["over_plain_pytorch"] = stats([p["ratio"] for p in pairs if p["ratio"]])
            entry["reference_pipeline"] = reference
            entry["batched_over_reference"] = _ratio(e2e, reference)
            per_pair = ", ".join(f"{p['ratio']:.2f}" for p in pairs if p["ratio"])
            print(f"  float32 peers: plain PyTorch loop {pairs[0]['plain_pytorch']:.1f} img/s, ratio per pair "
                  f"{per_pair}; end-to-end / ceiling per pair {', '.join(f'{r:.2f}' for r in over_ceiling)}; "
                  f"reference pipeline {reference['images_per_sec']['median']:.1f} img/s", flush=True)
        report["local"].append(entry)
    log.info("input pipeline ...")
    report["pipeline"] = L.bench_pipeline(hp, data, n_images=cfg["pipeline_images"], workers=workers,
                                          batch=min(hp.mini_batch_size, 32))
    for aug, r in report["pipeline"]["results"].items():
        print(f"  pipeline {aug:<22} multilabel_ic {r['multilabel_ic']['images_per_sec']:.1f} img/s, "
              f"PIL+torchvision {r['pil_torchvision']['images_per_sec']:.1f} img/s, ratio {r['ratio']:.2f}",
              flush=True)
    args_, aux = mxnet_state_dict(L.trained_like_network(hp))
    art = write_model_tar(out / "bench-model.tar.gz", {1: ({k: v.numpy() for k, v in args_.items()},
                                                           {k: v.numpy() for k, v in aux.items()})},
                          num_classes=hp.num_classes, num_layers=hp.num_layers,
                          image_shape=hp.input_shape, multi_label=True)
    report["inference"] = L.bench_inference(hp, data, artifact=art, device=device, n_single=cfg["single"],
                                             rounds=cfg["inference_rounds"])
    inf = report["inference"]
    for name, v in inf["variants"].items():
        if "error" in v:
            print(f"  inference {name}: not run ({v['error']})", flush=True)
            continue
        print(f"  inference {name}: batch of {inf['batch_size']} {v['batch_images_per_sec']:.1f} img/s "
              f"({inf['speedup_over_first'][name]:.2f}x the first version), single image p50 "
              f"{v['single_image_ms']['p50']:.1f} ms, max |p - first| {v['max_abs_diff_vs_first']:.1e}", flush=True)
    prices = load_prices(getattr(args, "prices", None))
    for path in args.sagemaker_log:
        report["sagemaker"].append(figures_from_log_file(path, instance_type=args.instance_type, prices=prices))
    if args.sagemaker_job:
        from ..backends.sagemaker import SageMakerBackend

        backend = SageMakerBackend(role="unused", bucket="unused", region=args.region, progress=False)
        for name in args.sagemaker_job:
            report["sagemaker"].append(figures_from_job(backend, name, prices=prices))
    report["side_by_side"] = side_by_side(report["local"], report["sagemaker"])
    from .engines import side_by_side_rows  # both SageMaker engines from published figures, labelled as such

    report["side_by_side"] += side_by_side_rows(COCO5_SAMPLES, prices)
    print("\n" + format_table(report["side_by_side"]))
    json_path, png_path = write_report(report, out)
    print(f"\nwrote {json_path} and {png_path}")
    return report


def sagemaker_cost(args) -> dict:
    """``multilabel-ic bench --sagemaker-cost``: both engines' rows, priced per epoch of the MS-COCO configuration;
    printed, and written to ``<output>/sagemaker-cost.json``."""
    from .._io import ensure_dir
    from .engines import cost_rows, format_cost_table
    from .sagemaker import figures_from_job, figures_from_log_file, load_prices

    prices = load_prices(getattr(args, "prices", None))
    samples = COCO5_SAMPLES
    jobs = [{**figures_from_log_file(p, instance_type=args.instance_type, prices=prices), "engine": "(log)"}
            for p in args.sagemaker_log]
    if args.sagemaker_job:
        from ..backends.sagemaker import SageMakerBackend

        backend = SageMakerBackend(role="unused", bucket="unused", region=getattr(args, "region", None),
                                   progress=False)
        jobs += [figures_from_job(backend, name, prices=prices) for name in args.sagemaker_job]
    rows = cost_rows(samples, prices, jobs)
    print(format_cost_table(rows, samples, prices))
    report = {"samples_per_epoch": samples, "config": dict(COCO5_BENCH_HP), "prices": prices, "rows": rows}
    out = ensure_dir(Path(args.output))
    atomic_write_text(out / "sagemaker-cost.json", json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out / 'sagemaker-cost.json'}")
    return report
