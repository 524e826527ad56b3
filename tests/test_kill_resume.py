"""kill -9 at chosen points of a local run (mid-epoch, while writing each kind of file, during validation): the
rerun resumes, ends with the same metrics as an uninterrupted run, and no temporary file remains.

The child process kills itself with SIGKILL at the point named by ``KILL_AT``: ``batch:N`` (the N-th training step),
``validate:N`` (the N-th validation pass), ``write:SUFFIX:N`` (the N-th atomic write of a file ending in SUFFIX, after
its content is in the temporary file and before it is renamed into place).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent("""
    import contextlib, os, signal, sys
    from multilabel_ic import Dataset, Hyperparameters, Trainer
    from multilabel_ic.backends.local import LocalOptions
    import multilabel_ic._io as io_mod
    import multilabel_ic.model.artifact as artifacts_mod
    import multilabel_ic.backends.local.loss as loss_mod
    import multilabel_ic.backends.local.torch_engine as engine_mod
    import multilabel_ic.backends.local.runfolder as runfolder_mod
    import multilabel_ic.model.params as params_mod

    ann, images, out = sys.argv[1:4]
    kill_at = os.environ.get("KILL_AT", "")
    counts = {}

    def hit(key, n):
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    if kill_at.startswith("write:"):
        _, suffix, n = kill_at.split(":")
        original = io_mod.atomic_write

        @contextlib.contextmanager
        def killing_write(path, mode="wb", **kw):
            with original(path, mode, **kw) as fh:
                yield fh
                if str(path).endswith(suffix):
                    fh.flush()
                    hit("write", int(n))

        def killing_bytes(path, data):
            with killing_write(path, "wb") as fh:
                fh.write(data)

        def killing_text(path, text):
            with killing_write(path, "w") as fh:
                fh.write(text)

        io_mod.atomic_write = killing_write  # atomic_serialize (the checkpoint) writes through it
        for mod in (engine_mod, artifacts_mod):
            if hasattr(mod, "atomic_write"):
                mod.atomic_write = killing_write
        runfolder_mod.atomic_write_text = killing_text
        params_mod.atomic_write_bytes = killing_bytes
    elif kill_at.startswith("batch:"):
        n = int(kill_at.split(":")[1])
        loss = loss_mod.weighted_bce

        def killing_loss(*a, **k):
            hit("batch", n)
            return loss(*a, **k)

        loss_mod.weighted_bce = killing_loss
    elif kill_at.startswith("validate:"):
        n = int(kill_at.split(":")[1])
        validate = engine_mod._validation_scores

        def killing_validate(*a, **k):
            hit("validate", n)
            return validate(*a, **k)

        engine_mod._validation_scores = killing_validate

    data = Dataset.from_coco(ann, images=images, categories=["person", "bicycle", "car", "motorcycle", "airplane"])
    train, val = data.subset(range(64)).split(48, seed=0)
    hp = Hyperparameters(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=3,
                         learning_rate=0.01, optimizer="adam", multi_label=1, use_weighted_loss=1,
                         num_training_samples=len(train), augmentation_type="crop_color_transform",
                         checkpoint_frequency=1)
    m = Trainer(hp, output_dir=out, options=LocalOptions(num_workers=0, progress=False)).fit(train, validation=val)
    print("METRICS", __import__("json").dumps({"final": m.metrics["final"],
                                              "losses": [r["train_loss"] for r in m.metrics["epochs"]]}))
""")

# (point, why it matters)
KILL_POINTS = [
    ("batch:5", "mid-epoch, between steps of the second epoch"),
    ("validate:2", "during the second validation pass"),
    ("write:last.pt:1", "while writing the first training-state checkpoint"),
    ("write:.params:2", "while writing the second epoch's parameters"),
    ("write:model.tar.gz:1", "while writing the artifact"),
    ("write:metrics.json:1", "while writing metrics.json, after the artifact"),
]


def _run(script, args, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def _metrics(stdout: str) -> dict:
    line = [s for s in stdout.splitlines() if s.startswith("METRICS ")][-1]
    return json.loads(line[len("METRICS "):])


def _temp_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def reference(synthetic_coco, tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    script = root / "child.py"
    script.write_text(_CHILD)
    ann, images = synthetic_coco
    ref = _run(script, [ann, images, root / "reference"])
    assert ref.returncode == 0, ref.stderr[-3000:]
    return script, _metrics(ref.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("point", [p for p, _ in KILL_POINTS], ids=[p for p, _ in KILL_POINTS])
def test_kill_9_then_rerun_matches_an_uninterrupted_run(point, reference, synthetic_coco, tmp_path):
    script, expected = reference
    ann, images = synthetic_coco
    out = tmp_path / "run"
    killed = _run(script, [ann, images, out], {"KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert "METRICS" not in killed.stdout
    if point.startswith("write:"):
        assert _temp_files(out), "the kill was meant to leave a half-written temporary file"
    resumed = _run(script, [ann, images, out])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = _metrics(resumed.stdout)
    assert got["losses"] == pytest.approx(expected["losses"], rel=1e-6)
    assert got["final"]["mAP"] == pytest.approx(expected["final"]["mAP"], abs=1e-9)
    assert got["final"]["per_class_AP"] == pytest.approx(expected["final"]["per_class_AP"], abs=1e-9)
    assert got["final"]["epoch"] == expected["final"]["epoch"]
    assert _temp_files(out) == [], "temporary files of the killed run remain"
    assert not (out / ".lock").exists()
    assert (out / "model.tar.gz").exists() and (out / "metrics.json").exists()
