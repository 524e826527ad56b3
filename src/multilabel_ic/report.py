"""The run report: one self-contained HTML file (``report.html``) to look at rather than read.

It holds the per-epoch curves (loss, accuracy, mAP, with the shipped epoch marked), the final and per-class metrics
with the tuned thresholds, and the hyperparameters and throughput. With the validation data it also holds
precision-recall curves per class, the label co-occurrence and a grid of validation images with their true and
predicted labels. For these, the shipped artifact scores the validation images (a SageMaker job's downloaded
artifact too). Figures are PNGs and thumbnails are JPEGs, all embedded as data URIs. The page has no script and
loads nothing.

``multilabel-ic report RUN_DIR`` writes it; ``train`` and ``parity`` write it at their end, where a report that
cannot be drawn is a warning, never a failed run (:func:`report_after_training`). Text in figures is drawn as it is
(no matplotlib mathtext), so class names with ``$``, ``\\``, ``_`` or ``^`` are shown, not parsed. Inputs are checked
by :mod:`multilabel_ic.report_inputs`.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._io import atomic_write_text
from .exceptions import MultilabelICError, require

if TYPE_CHECKING:
    from .data.dataset import Dataset

__all__ = ["write_report", "report_after_training", "REPORT_NAME"]

log = logging.getLogger("multilabel_ic")
REPORT_NAME = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d2330}
h1{font-size:1.6em;margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #dde;padding-bottom:4px}
.sub{color:#667;margin-top:0} table{border-collapse:collapse;margin:8px 0} td,th{padding:4px 10px;
border-bottom:1px solid #eef;text-align:right} th{background:#f5f6fa} td:first-child,th:first-child{text-align:left}
.cards{display:flex;gap:14px;flex-wrap:wrap}.card{background:#f5f6fa;border-radius:8px;padding:10px 16px;min-width:140px}
.card b{display:block;font-size:1.5em}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));
gap:10px}.tile{border:1px solid #dde;border-radius:6px;padding:6px;font-size:12px}.tile img{width:100%;
border-radius:4px}.ok{color:#17803d}.miss{color:#b42318}.extra{color:#b54708} img.fig{max-width:100%}
.heat td{text-align:center;min-width:60px}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], *, attrs: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        extra = f" {attrs[i]}" if attrs else ""
        body.append(f"<tr{extra}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pr_figure(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import average_precision, precision_recall_curve

    fig, ax = plt.subplots(figsize=(7, 5))
    for c, name in enumerate(class_names):
        curve = precision_recall_curve(labels[:, c], scores[:, c])
        if curve is None:
            continue
        precision, recall, _ = curve
        ap = average_precision(labels[:, c], scores[:, c])
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post", label=f"{name} (AP {ap:.3f})")
    ax.set(title="Precision-recall per class (validation, shipped model)", xlabel="recall", ylabel="precision",
           xlim=(0, 1.01), ylim=(0, 1.02))
    if ax.get_legend_handles_labels()[0]:  # no curve where no class has a positive
        ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def _ap_figure(per_class: dict[str, float | None]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    values = [float(v) if (v := per_class[n]) is not None else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(names, values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=9)
    ax.set(title="Average precision per class (shipped model)", xlabel="class", ylabel="AP", ylim=(0, 1.08))
    fig.tight_layout()
    return fig


def _thumbnail(path: Path, size: int = 160) -> str:
    import cv2

    from .images import decode_image, read_bytes

    img = decode_image(read_bytes(path), channels=3, source=str(path))
    h, w = img.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode()


def _image_grid(validation: Dataset, scores: np.ndarray, thresholds: Sequence[float], max_images: int) -> str:
    names = list(validation.class_names)
    rows = np.linspace(0, len(validation) - 1, num=min(max_images, len(validation))).round().astype(int)
    tiles = []
    for i in dict.fromkeys(int(r) for r in rows):
        truth = {n for n, y in zip(names, validation.labels[i]) if y >= 0.5}
        predicted = {n for n, s, t in zip(names, scores[i], thresholds) if s >= t}
        marks = ([f'<span class="ok">{html.escape(n)}</span>' for n in names if n in truth & predicted]
                 + [f'<span class="miss">missed {html.escape(n)}</span>' for n in names if n in truth - predicted]
                 + [f'<span class="extra">extra {html.escape(n)}</span>' for n in names if n in predicted - truth])
        tiles.append(f'<div class="tile" data-image="{html.escape(validation.paths[i])}">'
                     f'<img alt="{html.escape(validation.paths[i])}" src="{_thumbnail(validation.image_path(i))}">'
                     f'<div>{", ".join(marks) or "no labels, none predicted"}</div></div>')
    return f'<div class="grid">{"".join(tiles)}</div>'


def _cooccurrence(data: Dataset) -> str:
    names = list(data.class_names)
    counts = data.cooccurrence()
    top = max(1, int(counts.max()))
    rows = []
    for i, name in enumerate(names):
        cells = "".join(f'<td style="background:rgba(31,119,180,{0.08 + 0.8 * counts[i, j] / top:.2f})">'
                        f"{int(counts[i, j])}</td>" for j in range(len(names)))
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    return (f'<table class="heat"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "<p class='sub'>Images of the validation data with both labels (the diagonal: images with the label).</p>")


def _artifact_label(metrics: dict, run: Path) -> str:
    """The artifact as the page names it: the S3 URI of a SageMaker job, else the run folder as it was given."""
    artifact = str(metrics.get("artifact") or "")
    return artifact if artifact.startswith("s3://") else str(run / "model.tar.gz")


def report_after_training(run_dir: str | Path, *, artifact: str | Path, validation: Dataset | None = None,
                          title: str | None = None) -> Path | None:
    """:func:`write_report` at the end of a training run: a report that cannot be written (a figure that cannot be
    drawn, a full disk) is a warning that names the model, and None; the trained model is never lost to it."""
    try:
        return write_report(run_dir, validation=validation, title=title)
    except Exception as exc:  # the model is trained and saved: nothing in a report may fail the run
        detail = " ".join(str(exc).split())
        log.warning("the report could not be written: %s; the model is at %s (try `multilabel-ic report %s` "
                    "again once this is fixed)", detail if isinstance(exc, MultilabelICError)
                    else f"{type(exc).__name__}: {detail}", artifact, run_dir)
        return None


@contextlib.contextmanager
def _plain_text() -> Iterator[None]:
    """Figures draw their text as it is: ``$``, ``\\``, ``_``, ``^`` in a class name are not matplotlib mathtext."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def html_page(heading: str, subtitle: str, sections: list[str]) -> str:
    """A whole report page in the house style: ``heading`` and ``subtitle`` (escaped here) over ``sections`` (HTML)."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(heading)}</h1>"
            f"<p class='sub'>{html.escape(subtitle)}</p>{''.join(sections)}</body></html>\n")


def write_report(run_dir: str | Path, *, validation: Dataset | None = None, output: str | Path | None = None,
                 max_images: int = 24, title: str | None = None) -> Path:
    """Write ``report.html`` for the run in ``run_dir`` (its ``metrics.json``, ``model-metadata.json`` and
    ``model.tar.gz``); ``validation`` adds the scoring pass (PR curves, co-occurrence, image grid). A run that has
    not finished (``metrics.jsonl`` only) gets its curves."""
    require("matplotlib", extra="local")
    with _plain_text():
        return _write_report(Path(run_dir), validation=validation, output=output, max_images=max_images,
                             title=title)


def _write_report(run: Path, *, validation: Dataset | None, output: str | Path | None, max_images: int,
                  title: str | None) -> Path:
    from .callbacks import metrics_figure
    from .report_inputs import read_class_names, read_run_metrics

    metrics, finished = read_run_metrics(run)
    final = metrics.get("final") or {}
    per_class = final.get("per_class_AP") or {}
    class_names, meta_thresholds = read_class_names(run, metrics)
    thresholds = final.get("tuned_thresholds") or meta_thresholds or [0.5] * len(class_names)
    hp = metrics.get("hyperparameters") or {}
    sections = []

    cards = [("macro mAP", final.get("mAP"), "mAP"), ("micro mAP", final.get("micro_mAP"), "micro_mAP"),
             ("F1 (macro, at 0.5)", final.get("f1_macro"), "f1_macro"),
             ("validation accuracy", final.get("validation_accuracy"), "validation_accuracy"),
             ("shipped epoch", final.get("epoch"), "epoch"),
             ("images/s (median)", metrics.get("images_per_sec_median"), "images_per_sec_median")]
    sections.append('<div class="cards">' + "".join(
        f'<div class="card"><span>{label}</span><b data-metric="{key}">{_fmt(v, 4 if key != "images_per_sec_median" else 1)}'
        f"</b></div>" for label, v, key in cards) + "</div>")

    sections.append("<h2>Training curves</h2>"
                    f'<img class="fig" alt="loss, accuracy and mAP per epoch" src="{_png(metrics_figure(metrics))}">')
    epochs = metrics.get("epochs") or []
    sections.append(_table(
        [[r["epoch"] + 1, _fmt(r.get("train_loss")), _fmt(r.get("train_accuracy")), _fmt(r.get("validation_accuracy")),
          _fmt(r.get("validation_mAP")), _fmt(r.get("time_cost"), 1), _fmt(r.get("images_per_sec"), 1)]
         for r in epochs], ["epoch", "train loss", "train accuracy", "validation accuracy", "validation mAP",
                            "time (s)", "images/s"],
        attrs=[f'data-epoch="{r["epoch"] + 1}"' for r in epochs]))

    if per_class:
        sections.append("<h2>Per class</h2>"
                        f'<img class="fig" alt="AP per class" src="{_png(_ap_figure(per_class))}">')
        rows, attrs = [], []
        for i, name in enumerate(class_names):
            rows.append([html.escape(name), f'<span data-ap>{_fmt(per_class.get(name))}</span>',
                         f'<span data-threshold>{_fmt(thresholds[i] if i < len(thresholds) else None)}</span>'])
            attrs.append(f'data-class="{html.escape(name)}"')
        sections.append(_table(rows, ["class", "AP", "tuned threshold"], attrs=attrs))

    if validation is not None and metrics.get("artifact") and (run / "model.tar.gz").is_file():
        from .model.predictor import LocalPredictor
        from .model.transforms import AugmentOptions

        # the validation transform (resize, centre crop), so the curves match the per-class AP above
        resize_text = str(hp.get("resize") or "")
        resize = int(resize_text) if resize_text.isascii() and resize_text.isdigit() and int(resize_text) else None
        predictor = LocalPredictor(run / "model.tar.gz", class_names=class_names or None, resize=resize,
                                   augment=AugmentOptions(inference="centre_crop"))
        from .images import read_bytes

        images = [read_bytes(validation.image_path(i)) for i in range(len(validation))]
        scores = np.asarray(predictor.predict_batch(images, sources=[str(p) for p in validation.paths]))
        labels = np.asarray(validation.labels)
        sections.append("<h2>Precision-recall</h2>"
                        f'<img class="fig" alt="precision-recall curves" src="{_png(_pr_figure(labels, scores, class_names))}">'
                        "<p class='sub'>From a scoring pass of the shipped artifact over the validation images "
                        "(the validation transform: resize, centre crop).</p>")
        sections.append("<h2>Label co-occurrence</h2>" + _cooccurrence(validation))
        sections.append("<h2>Validation images</h2><p class='sub'>Predicted at the tuned thresholds: "
                        "<span class='ok'>correct</span>, <span class='miss'>missed</span>, "
                        "<span class='extra'>extra</span>.</p>" + _image_grid(validation, scores, thresholds,
                                                                               max_images))

    sections.append("<h2>Hyperparameters</h2>" + _table(
        [[html.escape(k), html.escape(str(v))] for k, v in sorted(hp.items())], ["name", "value"],
        attrs=[f'data-hp="{html.escape(k)}"' for k in sorted(hp)]))
    speeds = [s for r in epochs for s in r.get("speed") or []]
    sections.append("<h2>Throughput</h2>" + _table(
        [["images/s per epoch (median)", _fmt(metrics.get("images_per_sec_median"), 1)],
         ["Speedometer samples/s (median)", _fmt(float(np.median(speeds)) if speeds else None, 1)],
         ["device", _fmt(metrics.get("device_name") or metrics.get("device") or metrics.get("instance_type"))],
         ["backend", _fmt(metrics.get("backend"))], ["engine", _fmt(metrics.get("engine"))]], ["", ""]))

    heading = title or f"Run report: {run.resolve().name}{'' if finished else ' (unfinished: metrics.jsonl)'}"
    page = html_page(heading, _artifact_label(metrics, run), sections)
    out = Path(output) if output else run / REPORT_NAME
    atomic_write_text(out, page)
    log.info("report: %s", out)
    return out
