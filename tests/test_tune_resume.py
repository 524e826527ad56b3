"""A local study killed (SIGKILL) during its fifth trial: the same study run again finishes it without running trials
1-4 again, and their results in the study file are exactly what they were (the issue's own scenario; the test in
tests/test_trust_tune.py kills trial 2 of 2)."""

from __future__ import annotations

import optuna
import pytest
from resume_support import kill_study_in_trial

from multilabel_ic import Hyperparameters
from multilabel_ic.testing import FakeLocalBackend
from multilabel_ic.tune import CategoricalRange, ContinuousRange, Tuner

SPACE = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"), "optimizer": CategoricalRange(["sgd", "adam"])}
HP = dict(num_classes=5, num_training_samples=24, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=8,
          epochs=2, multi_label=1, optimizer="adam", learning_rate=0.01)
STUDY = dict(objective="validation:mAP", max_trials=5, seed=11, pruning=False)


def _trials(out):
    study = optuna.load_study(study_name="multilabel-ic", storage=f"sqlite:///{out / 'study.db'}")
    return [(t.number, t.state.name, t.value, t.params, t.intermediate_values, t.user_attrs, t.datetime_start,
             t.datetime_complete) for t in study.trials]


@pytest.mark.slow  # a study in a child process, killed, then finished here (each trial writes its report)
def test_kill_9_during_trial_5_then_a_rerun_keeps_trials_1_to_4_and_finishes_the_study(synthetic_coco, coco5,
                                                                                       tmp_path):
    out = tmp_path / "study"
    kill_study_in_trial(synthetic_coco, out, 5, HP, **STUDY)
    before = _trials(out)
    assert [b[1] for b in before] == ["COMPLETE"] * 4 + ["RUNNING"] and before[4][4] == {0: pytest.approx(
        before[4][4][0])}  # killed in trial 5, after its first epoch was reported

    backend = FakeLocalBackend()
    result = Tuner(Hyperparameters(**HP), SPACE, output_dir=out, backend=backend, **STUDY).fit(
        coco5.subset(range(24)), validation=coco5.subset(range(24, 48)))
    after = _trials(out)
    assert after[:4] == before[:4]  # trials 1-4: not run again; every field of theirs in the study file unchanged
    # only trial 5 trained, resumed in its folder after its saved epoch
    assert [(f["output_dir"].name, f["epochs_trained"]) for f in backend.fits] == [("trial-005", [1])]
    assert [a[1] for a in after] == ["COMPLETE"] * 4 + ["FAIL", "COMPLETE"]
    assert after[5][3] == before[4][3] and after[5][5]["retry_of"] == 4 and after[5][5]["run_dir"] == "trial-005"
    assert sum(t["state"] == "COMPLETE" for t in result.trials) == 5
    assert not list(out.rglob("*.tmp*")) and not (out / ".lock").exists()
