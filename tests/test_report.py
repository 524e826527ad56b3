"""The run report, looked at in a real headless Chromium: it loads with no console error, a screenshot is taken, and
the figures on the page are those of metrics.json. Chromium comes from the distribution's packages (``make test``
installs it where it can: ``make browser``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from multilabel_ic.cli import main

TINY = dict(num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=2, multi_label=1,
            optimizer="adam", learning_rate=0.001, use_weighted_loss=1, augmentation_type="crop")


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the report's browser test needs Chromium: `make browser` installs it (apt-get install chromium, "
                    "as root), or set CHROMIUM=/path/to/chrome")
    return found


def browse(page: Path, screenshot: Path) -> tuple[list[str], str]:
    """(the console messages, the DOM after load) of ``page`` in headless Chromium; a screenshot to ``screenshot``."""
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--window-size=1280,3000", "--hide-scrollbars"]
    shot = subprocess.run([*base, f"--screenshot={screenshot}", page.resolve().as_uri()], capture_output=True,
                          text=True, timeout=120)
    dom = subprocess.run([*base, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    return console, dom.stdout


class _Values(HTMLParser):
    """The text of elements with data-metric / data-ap / data-threshold, by class row, plus every img src."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, str] = {}
        self.ap: dict[str, str] = {}
        self.thresholds: dict[str, str] = {}
        self.epochs: list[str] = []
        self.images: list[str] = []
        self.tiles = 0
        self._row: str | None = None
        self._capture: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-class" in a:
            self._row = a["data-class"]
        if tag == "tr" and "data-epoch" in a:
            self.epochs.append(a["data-epoch"])
        if "data-metric" in a:
            self._capture = ("metric", a["data-metric"])
        if "data-ap" in a and self._row:
            self._capture = ("ap", self._row)
        if "data-threshold" in a and self._row:
            self._capture = ("threshold", self._row)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "div" and a.get("class") == "tile":
            self.tiles += 1

    def handle_data(self, data):
        if self._capture:
            kind, key = self._capture
            {"metric": self.metrics, "ap": self.ap, "threshold": self.thresholds}[kind][key] = data.strip()
            self._capture = None


@pytest.fixture(scope="module")
def trained_run(coco5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    train, val = coco5.split(0.75, seed=0)
    train.to_lst(folder / "train.lst")
    val.to_lst(folder / "validation.lst")
    code = main(["--quiet", "train", "--train-lst", str(folder / "train.lst"), "--validation-lst",
                 str(folder / "validation.lst"), "--images", str(coco5.root), "--classes",
                 ",".join(coco5.class_names), "--output", str(folder / "run"), "--workers", "0",
                 *[f"--hp={k}={v}" for k, v in TINY.items()]])
    assert code == 0
    return folder, val


def test_the_report_in_a_real_browser(trained_run, tmp_path):
    folder, val = trained_run
    page = folder / "run" / "report.html"  # written by train
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    console, dom = browse(page, tmp_path / "report.png")
    assert console == []
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a rendered page, not a blank one
    seen = _Values()
    seen.feed(dom)
    final = metrics["final"]
    assert seen.metrics["mAP"] == f"{final['mAP']:.4f}"
    assert seen.metrics["epoch"] == str(final["epoch"])
    assert seen.metrics["images_per_sec_median"] == f"{metrics['images_per_sec_median']:.1f}"
    assert seen.ap == {name: f"{ap:.4f}" for name, ap in final["per_class_AP"].items() if ap is not None} | {
        name: "n/a" for name, ap in final["per_class_AP"].items() if ap is None}
    assert seen.thresholds == {name: f"{t:.4f}" for name, t in zip(val.class_names, final["tuned_thresholds"])}
    assert seen.epochs == [str(e["epoch"] + 1) for e in metrics["epochs"]]
    assert seen.tiles == min(24, len(val)) and all(src.startswith("data:image/") for src in seen.images)
    assert len(seen.images) == 3 + seen.tiles  # curves, AP bars, PR curves + the thumbnails: all embedded
    assert "Label co-occurrence" in dom and "Precision-recall" in dom and "Hyperparameters" in dom


def test_the_console_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><body><script>undefinedFunction();</script></body></html>")
    console, _ = browse(page, tmp_path / "broken.png")
    assert any("undefinedFunction is not defined" in line for line in console)


def test_report_command_without_validation_data_and_for_a_non_run(trained_run, tmp_path, capsys):
    folder, _ = trained_run
    out = tmp_path / "plain.html"
    assert main(["--quiet", "report", str(folder / "run"), "--output", str(out)]) == 0
    text = out.read_text()
    assert "Training curves" in text and "Precision-recall" not in text  # no scoring pass without the data
    assert main(["--quiet", "report", str(folder / "run"), "--output", str(tmp_path / "full.html"),
                 "--validation-lst", str(folder / "validation.lst"), "--images", str(Path(trained_run[1].root))]) == 0
    assert "Precision-recall" in (tmp_path / "full.html").read_text()
    assert main(["--quiet", "report", str(tmp_path)]) == 2
    assert re.search(r"no metrics\.json", capsys.readouterr().err)
