import numpy as np
import pytest

from multilabel_ic.metrics import (
    average_precision,
    evaluate,
    mean_average_precision,
    micro_average_precision,
    multilabel_accuracy,
    per_class_ap,
    precision_recall_f1,
    tune_thresholds,
)


def test_average_precision_hand_computed():
    # ranking: 0.9(+) 0.8(-) 0.7(+) 0.1(-): precision at the two positives = 1 and 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)
    assert average_precision([0, 0, 1], [0.9, 0.8, 0.1]) == pytest.approx(1 / 3)


def test_average_precision_groups_ties():
    # all scores tied: one threshold, precision 1/2 at recall 1
    assert average_precision([1, 0, 1, 0], [0.5] * 4) == pytest.approx(0.5)


def test_class_without_positives_is_excluded_not_nan():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.1]])
    assert per_class_ap(y, s) == [pytest.approx(1.0), None]
    assert mean_average_precision(y, s) == pytest.approx(1.0)
    ev = evaluate(y, s, class_names=["a", "b"])
    assert ev["classes_without_positives"] == ["b"] and ev["mAP"] == pytest.approx(1.0)
    assert mean_average_precision(np.zeros((2, 2)), s[:2]) is None


def test_micro_map_pools_all_pairs():
    y = np.array([[1, 0], [0, 1]])
    s = np.array([[0.9, 0.8], [0.1, 0.7]])
    # pooled ranking 0.9(+) 0.8(-) 0.7(+) 0.1(-)
    assert micro_average_precision(y, s) == pytest.approx(5 / 6)


def test_precision_recall_f1_micro_and_macro():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    s = np.array([[0.9, 0.6], [0.4, 0.7], [0.2, 0.3], [0.6, 0.1]])
    r = precision_recall_f1(y, s, 0.5)
    # class 0: tp=1 fp=1 fn=1 -> p=r=f=0.5; class 1: tp=1 fp=1 fn=1 -> 0.5
    assert r["per_class"]["f1"] == pytest.approx([0.5, 0.5])
    assert r["macro"]["f1"] == pytest.approx(0.5) and r["micro"]["precision"] == pytest.approx(0.5)
    r2 = precision_recall_f1(y, s, [0.3, 0.5])
    assert r2["per_class"]["recall"][0] == pytest.approx(1.0)


def test_tuned_thresholds_maximise_f1():
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.30], [0.25], [0.2], [0.1]])
    (t,) = tune_thresholds(y, s)
    assert 0.2 < t <= 0.25
    assert precision_recall_f1(y, s, [t])["per_class"]["f1"][0] == pytest.approx(1.0)
    assert tune_thresholds(np.zeros((3, 1)), np.ones((3, 1)), default=0.4) == [0.4]


def test_algorithm_accuracy_is_mean_binary_accuracy():
    y = np.array([[1, 0, 1], [0, 0, 1]])
    s = np.array([[0.9, 0.6, 0.4], [0.2, 0.1, 0.5]])
    # correct decisions: row0 -> T F F, row1 -> T T T  => 4/6
    assert multilabel_accuracy(y, s) == pytest.approx(4 / 6)
    per_class = [np.mean((s[:, c] >= 0.5) == y[:, c]) for c in range(3)]
    assert multilabel_accuracy(y, s) == pytest.approx(np.mean(per_class))


def test_shape_and_label_checks():
    with pytest.raises(ValueError, match="same shape"):
        average_precision([1, 0], [0.5])
    with pytest.raises(ValueError, match="0/1"):
        average_precision([2, 0], [0.5, 0.1])
