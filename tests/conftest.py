"""Shared fixtures: a small synthetic COCO-format dataset generated once per session."""

from __future__ import annotations

import logging

import pytest

from multilabel_ic.data import COCO5, Dataset, generate_coco


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    ann, images = generate_coco(root, num_images=120, seed=3)
    return ann, images


@pytest.fixture(scope="session")
def coco5(synthetic_coco) -> Dataset:
    ann, images = synthetic_coco
    return Dataset.from_coco(ann, images=images, categories=COCO5)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO, logger="multilabel_ic")
    yield
