import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from multilabel_ic import DataError, Dataset
from multilabel_ic.data import COCO5, generate_coco
from multilabel_ic.data.split import iterative_stratification, random_split


def _example_selection(ann_path):
    """The AWS MS-COCO notebook's selection code, verbatim in logic (np.int replaced by int)."""
    coco = COCO(str(ann_path))
    catIds = coco.getCatIds()
    image_ids_of_cats = [coco.getImgIds(catIds=cat) for cat in catIds]
    image_ids, labels = [], []
    for ind_cat in [1, 2, 3, 4, 5]:
        for image_id in image_ids_of_cats[ind_cat - 1]:
            if image_id in image_ids:
                labels[image_ids.index(image_id)][ind_cat - 1] = 1
            else:
                image_ids.append(image_id)
                labels.append(np.zeros(5, dtype=int))
                labels[-1][ind_cat - 1] = 1
    written = []
    sum_labels = labels[0]  # the example's bug: this aliases row 0
    for label_h in labels:
        sum_labels += label_h
        written.append(label_h.copy())  # what fp.write sees for this row
    return [coco.loadImgs(i)[0]["file_name"] for i in image_ids], written


def test_from_coco_reproduces_the_ms_coco_example_without_its_bug(synthetic_coco, coco5):
    ann, _ = synthetic_coco
    paths, labels = _example_selection(ann)
    assert coco5.paths == paths  # same images, same order
    assert labels[0].max() == 2  # the example writes a 2 into the first row ...
    expected = np.stack(labels)
    expected[0] //= 2  # ... which is the first row doubled; the rest is what we produce
    np.testing.assert_array_equal(coco5.labels, expected)
    assert coco5.labels.max() == 1 and coco5.class_names == COCO5


def test_from_coco_labels_match_annotations(synthetic_coco, coco5):
    ann, _ = synthetic_coco
    doc = json.loads(ann.read_text())
    by_file = {im["file_name"]: im["id"] for im in doc["images"]}
    cats_of = {}
    for a in doc["annotations"]:
        cats_of.setdefault(a["image_id"], set()).add(a["category_id"])
    for path, row in zip(coco5.paths, coco5.labels):
        assert row.tolist() == [int(c in cats_of[by_file[path]]) for c in (1, 2, 3, 4, 5)]
    selected = {by_file[p] for p in coco5.paths}
    unselected = {i for i in cats_of if not cats_of[i] & {1, 2, 3, 4, 5}}
    assert not selected & unselected  # images with only the distractor category are left out


def test_from_coco_category_ids_and_errors(synthetic_coco):
    ann, images = synthetic_coco
    by_id = Dataset.from_coco(ann, images=images, categories=[5, 1])
    assert by_id.class_names == ["airplane", "person"]
    with pytest.raises(DataError, match="no category named 'zebra'"):
        Dataset.from_coco(ann, images=images, categories=["zebra"])
    with pytest.raises(DataError, match="not found"):
        Dataset.from_coco(images / "missing.json", images=images, categories=["person"])


def test_synthetic_generator_is_deterministic_and_realistic(tmp_path):
    a, _ = generate_coco(tmp_path / "a", num_images=30, seed=5)
    b, _ = generate_coco(tmp_path / "b", num_images=30, seed=5)
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a/images/000000100003.jpg").read_bytes() == (tmp_path / "b/images/000000100003.jpg").read_bytes()
    doc = json.loads(a.read_text())
    sizes = {(im["width"], im["height"]) for im in doc["images"]}
    assert len(sizes) > 2 and (640, 480) in sizes | {(640, 480)}


def test_synthetic_class_imbalance(coco5):
    counts = coco5.class_counts()
    assert counts["person"] == max(counts.values())
    assert counts["person"] > 2 * counts["airplane"] > 0
    co = coco5.cooccurrence()
    assert co[0, 1] > 0 and np.array_equal(np.diag(co), coco5.labels.sum(0))


def test_lst_round_trip_through_dataset(coco5, tmp_path):
    p = coco5.to_lst(tmp_path / "all.lst")
    back = Dataset.from_lst(p, root=coco5.root, class_names=coco5.class_names)
    assert back.paths == coco5.paths
    np.testing.assert_array_equal(back.labels, coco5.labels)


def test_random_split_is_deterministic_and_disjoint(coco5):
    a1, b1 = coco5.split(0.8, seed=1)
    a2, b2 = coco5.split(0.8, seed=1)
    a3, _ = coco5.split(0.8, seed=2)
    assert a1.paths == a2.paths and b1.paths == b2.paths and a1.paths != a3.paths
    assert not set(a1.paths) & set(b1.paths) and len(a1) + len(b1) == len(coco5)
    assert len(a1) == round(0.8 * len(coco5))
    t, v = coco5.split(50, seed=0)
    assert len(t) == 50


def test_split_size_errors():
    with pytest.raises(ValueError, match="empty side"):
        random_split(10, 10, 0)
    with pytest.raises(ValueError, match="count or a fraction"):
        random_split(10, 2.5, 0)


def test_stratified_split_keeps_rare_classes_on_both_sides():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < [0.6, 0.3, 0.05, 0.02]).astype(np.uint8)
    tr, va = iterative_stratification(labels, 0.75, seed=0)
    assert len(tr) == 150 and len(va) == 50 and not set(tr) & set(va)
    for c in range(4):
        total = labels[:, c].sum()
        if total >= 2:
            assert labels[va, c].sum() >= 1 and labels[tr, c].sum() >= 1
        assert abs(labels[tr, c].sum() - 0.75 * total) <= max(2, 0.15 * total)
    tr2, va2 = iterative_stratification(labels, 0.75, seed=0)
    assert np.array_equal(tr, tr2)


def test_summary_mentions_every_class(coco5):
    text = coco5.summary()
    for name in COCO5:
        assert name in text
    assert f"{len(coco5)} images" in text


def test_dataset_validates_inputs():
    with pytest.raises(DataError, match="shape"):
        Dataset(["a.jpg"], np.zeros((2, 2)), ["x", "y"])
    with pytest.raises(DataError, match="multi-hot"):
        Dataset(["a.jpg"], np.array([[2, 0]]), ["x", "y"])
    with pytest.raises(DataError, match="absolute"):
        Dataset(["/a.jpg"], np.array([[1, 0]]), ["x", "y"])


def test_check_images_names_missing_and_empty_files(coco5, tmp_path):
    import shutil

    root = tmp_path / "imgs"
    shutil.copytree(coco5.root, root)
    ds = Dataset(coco5.paths, coco5.labels, coco5.class_names, root=root)
    ds.check_images()
    (root / coco5.paths[0]).unlink()
    (root / coco5.paths[1]).write_bytes(b"")
    with pytest.raises(DataError, match=rf"training data: 2 of {len(ds)} images cannot be used: .*"
                                        rf"{coco5.paths[0]} \(missing\), .*{coco5.paths[1]} \(empty\)"):
        ds.check_images(what="training data")


def test_training_fails_before_the_first_step_on_a_missing_image(coco5, tmp_path):
    from multilabel_ic import Hyperparameters, Trainer
    from multilabel_ic.backends.local import LocalOptions

    ds = Dataset(coco5.paths[:20] + ["nope/missing.jpg"], np.vstack([coco5.labels[:20], coco5.labels[:1]]),
                 coco5.class_names, root=coco5.root)
    hp = Hyperparameters(num_classes=5, num_training_samples=21, mini_batch_size=4, num_layers=18,
                         image_shape="3,32,32", multi_label=1)
    with pytest.raises(DataError, match=r"missing.jpg \(missing\)"):
        Trainer(hp, output_dir=tmp_path, options=LocalOptions(num_workers=0, progress=False)).fit(ds)
    assert not (tmp_path / "checkpoints").exists()
