"""The kill-and-resume checks in child processes: a local run interrupted after its first checkpoint and run again
ends with the losses of an uninterrupted one (the local-training and initial-model tests); a local study killed
(SIGKILL) in one of its trials (the tuning tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch

__all__ = ["RUN", "losses_of", "interrupt_and_resume", "kill_study_in_trial"]

RUN = textwrap.dedent("""
    import signal
    import sys
    from multilabel_ic import Dataset, Hyperparameters, Trainer, setup_logging
    # a terminal delivers Ctrl-C as KeyboardInterrupt even when the test runner itself ignores SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setup_logging()
    from multilabel_ic.backends.local import LocalOptions
    ann, images, out, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    initial_model = sys.argv[5] if len(sys.argv) > 5 else None  # a continued run (incremental training)
    data = Dataset.from_coco(ann, images=images, categories=["person", "bicycle", "car", "motorcycle", "airplane"])
    train, val = data.split(0.75, seed=0)
    hp = Hyperparameters(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16,
                         epochs=epochs, learning_rate=0.001, optimizer="adam", multi_label=1,
                         num_training_samples=len(train), augmentation_type="crop_color_transform")
    m = Trainer(hp, output_dir=out, options=LocalOptions(num_workers=0, progress=False)).fit(
        train, validation=val, initial_model=initial_model)
    print("LOSSES", [r["train_loss"] for r in m.metrics["epochs"]])
""")


def losses_of(stdout: str) -> list[float]:
    """The per-epoch training losses a run of ``RUN`` printed."""
    line = [s for s in stdout.splitlines() if s.startswith("LOSSES")][-1]
    return json.loads(line[len("LOSSES "):])


def interrupt_and_resume(synthetic_coco, tmp_path, sig, *extra: str) -> list[float]:
    """A 3-epoch run of ``RUN`` (``extra``: its optional arguments, an initial model)
    interrupted by ``sig`` after its first checkpoint, then run again: it resumes and ends with the losses of an
    uninterrupted run, which it returns."""
    ann, images = synthetic_coco
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run([sys.executable, str(script), ann, images, tmp_path / "ref", "3", *extra],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, str(script), ann, images, out, "3", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    state = out / "checkpoints" / "last.pt"
    while time.time() < deadline and not state.exists():
        time.sleep(0.05)
    assert state.exists(), "no checkpoint was written"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    done = json.loads(torch.load(state, weights_only=True)["state"])["epoch"]
    assert 1 <= done <= 3
    if sig == signal.SIGINT and done < 3:
        assert "run the same command again to resume" in err
    resumed = subprocess.run([sys.executable, str(script), ann, images, out, "3", *extra], capture_output=True,
                             text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if done < 3:
        assert "resuming from" in resumed.stderr
    np.testing.assert_allclose(losses_of(resumed.stdout), losses_of(ref.stdout), rtol=1e-5)
    return losses_of(ref.stdout)


_STUDY = textwrap.dedent("""
    import json, os, signal, sys
    from multilabel_ic import Dataset, Hyperparameters
    from multilabel_ic.testing import FakeLocalBackend
    from multilabel_ic.tune import Tuner, ContinuousRange, CategoricalRange

    ann, images, out, trial = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    hp, study = json.loads(sys.argv[5]), json.loads(sys.argv[6])
    data = Dataset.from_coco(ann, images=images, categories=["person", "bicycle", "car", "motorcycle", "airplane"])

    def before_epoch(run_dir, epoch):  # kill -9 as the trial starts its second epoch (its first one saved)
        if run_dir.name == f"trial-{trial:03d}" and epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    space = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"),
             "optimizer": CategoricalRange(["sgd", "adam"])}
    Tuner(Hyperparameters(**hp), space, output_dir=out, backend=FakeLocalBackend(before_epoch=before_epoch),
          **study).fit(data.subset(range(24)), validation=data.subset(range(24, 48)))
""")


def kill_study_in_trial(synthetic_coco, out, trial: int, hp: dict, **study) -> None:
    """Run a local study (FakeLocalBackend; learning rate and optimizer searched; the first 24 images to train, the
    next 24 to validate) of ``hp`` and ``study`` (Tuner's keywords) in a child process that kills itself with
    SIGKILL as trial number ``trial`` (1-based) starts its second epoch; checks that it died by the signal."""
    ann, images = synthetic_coco
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run([sys.executable, "-c", _STUDY, str(ann), str(images), str(out), str(trial),
                            json.dumps(hp), json.dumps(study)], env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
