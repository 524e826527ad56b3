"""The tuning report: one self-contained HTML page (``tuning-report.html``) in the run report's style.

It holds the best trial and its hyperparameters, the objective by trial (pruned and failed trials marked), the
parameter importances (Optuna's: fANOVA with scikit-learn installed, else PED-ANOVA; local studies with two or
more completed trials) and the table of every
trial with a link to its run report. Figures are embedded PNGs; the page has no script and loads nothing.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..report import _fmt, _png, _table, html_page

__all__ = ["write_tuning_report", "TUNING_REPORT_NAME"]

log = logging.getLogger("multilabel_ic.tune")
TUNING_REPORT_NAME = "tuning-report.html"
_STATE_STYLE = {"COMPLETE": ("o", "tab:blue"), "PRUNED": ("x", "tab:orange"), "FAIL": ("v", "tab:red"),
                "Completed": ("o", "tab:blue"), "Stopped": ("x", "tab:orange"), "Failed": ("v", "tab:red")}


def _objective_figure(trials: list[dict], objective: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4))
    best_so_far, xs, ys = -math.inf, [], []
    for state in dict.fromkeys(t["state"] for t in trials):
        points = [(t["number"], _shown_value(t)) for t in trials if t["state"] == state and _shown_value(t) is not None]
        if points:
            marker, color = _STATE_STYLE.get(state, ("s", "tab:gray"))
            ax.scatter(*zip(*points), marker=marker, color=color, label=state.lower())
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] in ("COMPLETE", "Completed") and t.get("value") is not None:
            best_so_far = max(best_so_far, t["value"])
        if best_so_far > -math.inf:
            xs.append(t["number"])
            ys.append(best_so_far)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    ax.set(title=f"Objective by trial ({objective})", xlabel="trial", ylabel=objective)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    fig.tight_layout()
    return fig


def _shown_value(trial: dict) -> float | None:
    """A trial's value, or for a pruned one its last reported epoch value."""
    if trial.get("value") is not None:
        return float(trial["value"])
    inter = trial.get("intermediate") or {}
    return float(list(inter.values())[-1]) if inter else None


def _importance_figure(importances: dict[str, float], method: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(title=f"Parameter importances ({method})", xlabel="importance", xlim=(0, 1.05))
    fig.tight_layout()
    return fig


def _value(v: Any) -> str:
    return _fmt(v, 6) if isinstance(v, float) else html.escape(str(v))


def write_tuning_report(output_dir: str | Path, summary: dict, *, output: str | Path | None = None) -> Path:
    """Write ``tuning-report.html`` for a study's summary (``tuning.json``) into ``output_dir``."""
    out_dir = Path(output_dir)
    trials = sorted(summary.get("trials") or [], key=lambda t: t["number"])
    objective = summary.get("objective") or "objective"
    best = summary.get("best")
    counts = {s: sum(1 for t in trials if t["state"] == s) for s in dict.fromkeys(t["state"] for t in trials)}
    sections = ['<div class="cards">' + "".join(
        f'<div class="card"><span>{label}</span><b data-metric="{key}">{value}</b></div>' for label, value, key in (
            (f"best {objective}", _fmt(best.get("value"), 4) if best else "n/a", "best_value"),
            ("best trial", html.escape(str(best["number"])) if best else "n/a", "best_trial"),
            ("trials", str(len(trials)), "trials"),
            ("backend", html.escape(str(summary.get("backend"))), "backend"))) + "</div>",
        "<p class='sub'>" + ", ".join(f"{n} {html.escape(s.lower())}" for s, n in counts.items()) + "</p>"]
    if best:
        sections.append("<h2>Best hyperparameters</h2>" + _table(
            [[html.escape(k), f"<span data-best-param>{_value(v)}</span>"] for k, v in best["params"].items()],
            ["name", "value"], attrs=[f'data-param="{html.escape(k)}"' for k in best["params"]]))
        if best.get("run_dir"):
            link = (f"{best['run_dir']}/report.html" if summary.get("backend") == "local" else None)
            sections.append(f"<p class='sub'>Run: {html.escape(best['run_dir'])}"
                            + (f" (<a href='{html.escape(link)}'>its report</a>)" if link else "") + "</p>")
    if any(_shown_value(t) is not None for t in trials):
        sections.append("<h2>Objective by trial</h2>"
                        f'<img class="fig" alt="objective by trial" src="{_png(_objective_figure(trials, objective))}">'
                        "<p class='sub'>A pruned trial is shown at its last reported epoch's value.</p>")
    importances = summary.get("importances")
    method = summary.get("importance_method") or "Optuna"
    if importances:
        sections.append("<h2>Parameter importances</h2>"
                        f'<img class="fig" alt="parameter importances" src="{_png(_importance_figure(importances, method))}">'
                        + _table([[html.escape(k), f"<span data-importance>{_fmt(v, 3)}</span>"]
                                  for k, v in importances.items()], ["parameter", "importance"],
                                 attrs=[f'data-importance-of="{html.escape(k)}"' for k in importances]))
    names = list(dict.fromkeys(k for t in trials for k in t.get("params") or {}))
    rows = []
    for t in trials:
        epochs = t.get("epochs_trained")
        run = html.escape(str(t.get("run_dir") or ""))
        if summary.get("backend") == "local" and t.get("run_dir") and (out_dir / t["run_dir"] / "report.html").is_file():
            run = f"<a href='{run}/report.html'>{run}</a>"
        rows.append([str(t["number"]), run, f"<span data-state>{html.escape(t['state'].lower())}</span>",
                     f"<span data-value>{_fmt(t.get('value'), 6)}</span>",
                     *[_value((t.get("params") or {}).get(n, "")) for n in names],
                     _fmt(epochs) if epochs is not None else "", _fmt(t.get("duration_s"), 1),
                     html.escape(t.get("error") or t.get("interrupted") or "")])
    sections.append("<h2>Trials</h2>" + _table(
        rows, ["trial", "run", "state", objective, *names, "epochs", "time (s)", "note"],
        attrs=[f'data-trial="{t["number"]}"' for t in trials]))
    base = summary.get("base_hyperparameters") or {}
    sections.append("<h2>Fixed hyperparameters</h2>" + _table(
        [[html.escape(k), html.escape(str(v))] for k, v in sorted(base.items())], ["name", "value"]))
    heading = f"Tuning report: {out_dir.resolve().name}"
    where = summary.get("tuning_job") or summary.get("study") or ""
    page = html_page(heading, str(where), sections)
    path = Path(output) if output else out_dir / TUNING_REPORT_NAME
    atomic_write_text(path, page)
    log.info("tuning report: %s", path)
    return path
