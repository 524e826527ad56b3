"""The parity report: one configuration, the same data, both local engines (PyTorch and MXNet Gluon), several seeds
each; plus the cross-load check (each engine's artifact predicted by the other framework).

``multilabel-ic parity`` and ``benchmarks/parity.py`` call :func:`run_parity`. It writes ``parity.json``,
``parity.md`` (the tables) and ``parity.png`` (per-epoch training loss and validation mAP of both engines with their
seed spread; the final per-class AP side by side). Needs both the ``local`` and the ``gluon`` extras.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._io import atomic_write, atomic_write_text, ensure_dir, json_default

if TYPE_CHECKING:
    from .backends.local import LocalOptions
    from .data.dataset import Dataset
    from .hyperparameters import Hyperparameters

__all__ = ["run_parity", "cross_load", "ENGINES", "PARITY_HP"]

log = logging.getLogger("multilabel_ic.parity")

ENGINES = ("pytorch", "gluon")
# the MS-COCO example's settings at a size a CPU trains in minutes (ResNet-18 at 64 px)
PARITY_HP = dict(num_layers=18, image_shape="3,64,64", resize=72, mini_batch_size=16, epochs=5, learning_rate=0.001,
                 optimizer="adam", multi_label=1, use_weighted_loss=1, augmentation_type="crop_color_transform")


def cross_load(artifact: str | Path, images: Sequence[bytes]) -> dict[str, Any]:
    """An artifact's probabilities from the PyTorch predictor and from MXNet (the inference container's Module
    binding of the artifact's own symbol) on the same preprocessed images: the max and mean |difference|."""
    from .backends.local.gluon import predict_artifact
    from .model.predictor import LocalPredictor

    predictor = LocalPredictor(artifact, device="cpu")
    arrays = [predictor._preprocess(img, f"<image {i}>") for i, img in enumerate(images)]
    torch_probs = np.asarray(predictor._run(arrays), dtype=np.float64)
    batch = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)
    mxnet_probs = predict_artifact(artifact, batch).astype(np.float64)
    diff = np.abs(torch_probs - mxnet_probs)
    return {"artifact": str(artifact), "images": len(images), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean())}


def _spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "range": float(v.max() - v.min())}


def run_parity(train: Dataset, validation: Dataset, hp: Hyperparameters, *, seeds: Sequence[int], output: str | Path,
               options: LocalOptions | None = None) -> dict[str, Any]:
    """Train ``hp`` with both engines for every seed, cross-load the artifacts, and write the report."""
    from .api import Trainer
    from .backends.local import LocalBackend, LocalOptions

    out = ensure_dir(output)
    base = options or LocalOptions(progress=False)
    runs: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for engine in ENGINES:
        for seed in seeds:
            log.info("parity: %s engine, seed %d", engine, seed)
            opts = dataclasses.replace(base, seed=seed, engine=engine)
            model = Trainer(hp, backend=LocalBackend(options=opts), output_dir=out / f"{engine}-seed{seed}").fit(
                train, validation=validation)
            m = model.metrics
            from .report import report_after_training

            report_after_training(out / f"{engine}-seed{seed}", artifact=model.artifact, validation=validation,
                                  title=f"Parity run: {engine} engine, seed {seed}")
            runs[engine].append({"seed": seed, "artifact": m["artifact"], "final_mAP": m["final"]["mAP"],
                                 "per_class_AP": m["final"]["per_class_AP"],
                                 "train_loss": [e["train_loss"] for e in m["epochs"]],
                                 "validation_mAP": [e.get("validation_mAP") for e in m["epochs"]],
                                 "images_per_sec_median": m["images_per_sec_median"]})
    from .images import read_bytes

    images = [read_bytes(validation.image_path(i)) for i in range(len(validation))]
    cross = {f"{engine} artifact": cross_load(runs[engine][0]["artifact"], images) for engine in ENGINES}
    summary = {engine: _spread([r["final_mAP"] for r in runs[engine]]) for engine in ENGINES}
    gap = abs(summary["pytorch"]["mean"] - summary["gluon"]["mean"])
    spread = max(summary["pytorch"]["range"], summary["gluon"]["range"])
    report = {"hyperparameters": hp.to_sagemaker(include_defaults=True), "seeds": list(seeds),
              "training_images": len(train), "validation_images": len(validation),
              "class_names": list(train.class_names), "runs": runs, "final_mAP": summary,
              "mean_gap": gap, "seed_spread": spread, "within_seed_spread": bool(gap <= spread),
              "cross_load": cross, "cross_load_within_1e-4": all(c["max_abs_diff"] <= 1e-4 for c in cross.values())}
    atomic_write_text(out / "parity.json", json.dumps(report, indent=2, default=json_default) + "\n")
    atomic_write_text(out / "parity.md", _markdown(report))
    _plot(report, out / "parity.png")
    log.info("parity report: %s (parity.md, parity.png)", out / "parity.json")
    return report


def _markdown(r: dict) -> str:
    lines = [f"# Parity: PyTorch engine vs MXNet Gluon engine ({len(r['seeds'])} seeds each)", "",
             f"{r['training_images']} training / {r['validation_images']} validation images; hyperparameters: "
             f"`{json.dumps({k: r['hyperparameters'][k] for k in sorted(r['hyperparameters'])})}`", "",
             "| engine | final macro mAP, mean | std | min | max | per seed |", "|---|---|---|---|---|---|"]
    for engine in ENGINES:
        s = r["final_mAP"][engine]
        per = ", ".join(f"{x['final_mAP']:.4f}" for x in r["runs"][engine])
        lines.append(f"| {engine} | {s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {per} |")
    verdict = "within" if r["within_seed_spread"] else "OUTSIDE"
    lines += ["", f"Gap between the engines' means: {r['mean_gap']:.4f}; largest seed-to-seed range: "
              f"{r['seed_spread']:.4f} ({verdict} the spread).", "",
              "| class | " + " | ".join(f"{e} AP (mean)" for e in ENGINES) + " |", "|---|---|---|"]
    for name in r["class_names"]:
        cells = []
        for engine in ENGINES:
            vals = [x["per_class_AP"][name] for x in r["runs"][engine] if x["per_class_AP"][name] is not None]
            cells.append(f"{np.mean(vals):.4f}" if vals else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| artifact | predicted by the other framework: max abs diff | mean abs diff | images |",
              "|---|---|---|---|"]
    for name, c in r["cross_load"].items():
        lines.append(f"| {name} | {c['max_abs_diff']:.2e} | {c['mean_abs_diff']:.2e} | {c['images']} |")
    return "\n".join(lines) + "\n"


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colours = {"pytorch": "tab:orange", "gluon": "tab:blue"}
    for ax, key, title in ((axes[0], "train_loss", "training loss per epoch"),
                           (axes[1], "validation_mAP", "validation mAP per epoch")):
        for engine in ENGINES:
            curves = np.array([[np.nan if v is None else v for v in run[key]] for run in r["runs"][engine]],
                              dtype=np.float64)
            epochs = np.arange(1, curves.shape[1] + 1)
            ax.plot(epochs, np.nanmean(curves, axis=0), color=colours[engine], label=f"{engine} (mean)")
            ax.fill_between(epochs, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=colours[engine],
                            alpha=0.2, label=f"{engine} seed range")
        ax.set_title(title)
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.legend()
    names = r["class_names"]
    width = 0.38
    for k, engine in enumerate(ENGINES):
        per = np.array([[np.nan if x["per_class_AP"][n] is None else x["per_class_AP"][n] for n in names]
                        for x in r["runs"][engine]], dtype=np.float64)
        axes[2].bar(np.arange(len(names)) + (k - 0.5) * width, np.nanmean(per, axis=0), width,
                    yerr=np.nanstd(per, axis=0), color=colours[engine], label=engine, capsize=3)
    axes[2].set_xticks(np.arange(len(names)), names, rotation=20)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("final per-class AP (mean, std over seeds)")
    axes[2].set_ylabel("average precision")
    axes[2].legend()
    fig.suptitle(f"PyTorch vs MXNet Gluon engine, seeds {r['seeds']}")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
