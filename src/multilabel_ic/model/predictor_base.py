"""What every predictor answers, whatever computes it (the local network, a SageMaker endpoint, a server): per-class
probabilities for encoded images in the algorithm's endpoint format, with the checks and formats they share. Part of
the contract of :mod:`multilabel_ic.backends.base`, kept here, torch-free, so that the model package implements it
without importing the backends above it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..exceptions import ArtifactError, BackendError, DataError, UsageError

__all__ = ["Predictor", "check_scores", "parse_probabilities", "ANSWER_FIX"]


ANSWER_FIX = "check that it serves a model of the built-in Image Classification algorithm"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_scores(value: Any, *, expected: int | None, where: str, fix: str,
                 expected_from: str = "class names") -> list[float]:
    """``value`` as ``[p_0, ..., p_{C-1}]``: a non-empty JSON list of finite numbers (not booleans), of length
    ``expected`` when that is known (``expected_from`` says where that number comes from)."""
    if not isinstance(value, list) or not value:
        raise BackendError(f"{where}: expected a list of one score per class, got {_show(value)}; {fix}.")
    for i, p in enumerate(value):
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise BackendError(f"{where}: score {i} is {_show(p)}, not a number; {fix}.")
        if not math.isfinite(p):
            raise BackendError(f"{where}: score {i} is {p}, not a finite number (the model's weights are "
                               f"probably broken); {fix}.")
    if expected is not None and len(value) != expected:
        raise BackendError(f"{where}: {len(value)} scores for {expected} {expected_from}; {fix}.")
    return [float(p) for p in value]


def parse_probabilities(body: bytes, *, source: str, fix: str = ANSWER_FIX) -> list[float]:
    """The body of an ``Accept: application/json`` answer of the algorithm's endpoint (``[p_0, ..., p_{C-1}]``) as
    floats, or a :class:`BackendError` that names ``source`` (the endpoint or URL), what came back instead and
    ``fix``. Every predictor that reads such a body over the network parses it here (:func:`check_scores`)."""
    try:
        probs = json.loads(body)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise BackendError(f"{source} answered with a body that is not JSON ({bytes(body)[:100]!r}); "
                               f"{fix}.") from exc
    return check_scores(probs, expected=None, where=f"{source} answered", fix=fix)


class Predictor:
    """Per-class probabilities for encoded images, in the SageMaker endpoint's response format.

    Subclasses implement :meth:`predict`; the rest is shared, so the local and the endpoint predictor behave the same.
    """

    class_names: list[str]
    thresholds: list[float] | None = None
    label: str = "the predictor"  # what error messages call it: "the model PATH", "endpoint NAME"

    def predict(self, image: bytes, content_type: str = "application/x-image") -> list[float]:
        """One encoded image (JPEG/PNG bytes) -> ``[p_0, ..., p_{C-1}]`` (the endpoint's JSON body)."""
        raise NotImplementedError

    def predict_batch(self, images: Sequence[bytes], *, output: str = "list",
                      sources: Sequence[str] | None = None) -> list[list[float]] | str:
        """Many images; ``output="jsonlines"`` gives batch transform's ``{"prediction": [...]}`` lines.
        ``sources`` (e.g. the file names) name the images in error messages."""
        self._check_output(output)
        images = self._check_images(images, sources)
        names = list(sources) if sources is not None else [f"<image {i}>" for i in range(len(images))]
        preds = []
        for img, name in zip(images, names):
            pred = self.predict(img)
            self._check_finite([pred], [name])
            preds.append(pred)
        return self._format(output, preds)

    def _check_width(self, scores: list[float], *, where: str, names_given: bool, fix: str = ANSWER_FIX) -> None:
        """A remote predictor's answer has one score per class: it names the classes ``class_i`` on the first answer
        when no names were given, and refuses an answer whose length differs from the names (given, or learnt from
        the first answer)."""
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(len(scores))]
        elif len(scores) != len(self.class_names):
            if names_given:
                shown = ", ".join(self.class_names[:5]) + (", ..." if len(self.class_names) > 5 else "")
                raise BackendError(
                    f"{where} {len(scores)} scores but {len(self.class_names)} class names were given ({shown}); "
                    f"give the class names of the model it serves, in label order (class_names=, CLI --classes).")
            raise BackendError(f"{where} {len(scores)} scores, but {len(self.class_names)} to an earlier image; the "
                               f"model behind it changed between the calls, or {fix}.")

    def _check_finite(self, scores, names: Sequence[str]) -> None:
        """An :class:`ArtifactError` naming the image and the model when a score is NaN or infinite: such a score is
        no probability, and it would be printed, written as invalid JSON (a bare NaN) or scored as a plausible mAP."""
        for row, name in zip(scores, names):
            values = np.asarray(row, dtype=float)
            if not np.isfinite(values).all():
                bad = [c for c, v in zip(self.class_names or range(len(values)), values) if not np.isfinite(v)]
                raise ArtifactError(f"{name}: {self.label} gave {values[~np.isfinite(values)][0]} as the score of "
                                    f"{len(bad)} class(es) ({', '.join(map(str, bad[:5]))}); a score must be a finite "
                                    f"probability. The model overflows on this input or is damaged: use another saved "
                                    f"epoch or train it again.")

    @staticmethod
    def _check_images(images, sources: Sequence[str] | None = None) -> list[bytes]:
        """The batch as a list of bytes, or a :class:`UsageError` that names the first item that is not bytes."""
        if isinstance(images, (bytes, bytearray, str, os.PathLike)):
            raise UsageError(f"predict_batch takes a list of encoded images (bytes), got one {type(images).__name__}; "
                             f"use predict() for one image, and Path(path).read_bytes() to read a file.")
        images = list(images)
        if sources is not None and len(sources) != len(images):
            raise UsageError(f"sources has {len(sources)} names for {len(images)} images.")
        for i, img in enumerate(images):
            if not isinstance(img, (bytes, bytearray, memoryview)):
                name = sources[i] if sources is not None else f"image {i}"
                raise UsageError(f"{name}: expected the encoded image as bytes, got {type(img).__name__}; read a file "
                                 f"with Path(path).read_bytes().")
        return images

    def _threshold(self, threshold: float | Sequence[float] | str) -> float | Sequence[float]:
        """A number, one per class, or "tuned" (the thresholds tuned on validation data)."""
        if isinstance(threshold, str):
            if threshold != "tuned":
                raise UsageError(f"threshold must be a number, a list of {len(self.class_names)} numbers (one per "
                                 f"class) or 'tuned'; got {threshold!r}")
            if not self.thresholds:
                raise UsageError("threshold='tuned' needs thresholds tuned on validation data "
                                 "(model.metrics['final']['tuned_thresholds']); this model has none (it was trained "
                                 "without validation data, or its model-metadata.json is missing).")
            return self.thresholds
        try:
            values = np.asarray(threshold, dtype=float)
        except (TypeError, ValueError):
            raise UsageError(f"threshold must be a number, a list of numbers or 'tuned'; got {threshold!r}") from None
        if values.ndim > 1 or (values.ndim == 1 and len(values) != len(self.class_names)):
            raise UsageError(f"threshold has {values.size} values but the model has {len(self.class_names)} classes "
                             f"({', '.join(self.class_names)}); give one number, or one per class.")
        if not np.all(np.isfinite(values)):
            raise UsageError(f"threshold values must be finite numbers; got {threshold!r}")
        return threshold

    @staticmethod
    def _check_output(output: str) -> None:
        if output not in ("list", "jsonlines"):
            raise UsageError(f"output must be 'list' or 'jsonlines', got {output!r}")

    @staticmethod
    def _format(output: str, preds: list[list[float]]) -> list[list[float]] | str:
        if output == "jsonlines":
            return "".join(json.dumps({"prediction": p}, allow_nan=False) + "\n" for p in preds)
        return preds

    def predict_labels(self, images: bytes | Sequence[bytes], *,
                       threshold: float | Sequence[float] | str = 0.5) -> list[str] | list[list[str]]:
        """Class names whose probability reaches the threshold (a float, one per class, or ``"tuned"``)."""
        single = isinstance(images, (bytes, bytearray, memoryview))
        if isinstance(images, (str, os.PathLike)):
            raise UsageError(f"predict_labels takes encoded image bytes (or a list of them), got "
                             f"{type(images).__name__} {str(images)[:60]!r}; read a file with Path(path).read_bytes().")
        batch: list[bytes] = [bytes(images)] if single else list(images)  # type: ignore[arg-type]
        t = np.broadcast_to(np.asarray(self._threshold(threshold), dtype=float), (len(self.class_names),))
        out = []
        for p in self.predict_batch(batch):
            out.append([n for n, v, th in zip(self.class_names, p, t) if v >= th])
        return out[0] if single else out

    def evaluate(self, dataset: Dataset, *, threshold: float | Sequence[float] | str = 0.5) -> dict:
        """Score this predictor on ``dataset`` (mAP, per-class AP, F1 at ``threshold``, accuracy), exactly as the
        endpoint would be scored: every image goes through :meth:`predict_batch`."""
        from ..metrics import evaluate

        if list(dataset.class_names) != list(self.class_names):
            raise DataError(f"the dataset's classes {dataset.class_names} differ from the model's {self.class_names}; "
                            f"pass class_names= in the model's order when reading the data.")
        threshold = self._threshold(threshold)
        dataset.check_images(what="evaluation data")
        from ..images import read_bytes

        paths = [dataset.image_path(i) for i in range(len(dataset))]
        scores = self.predict_batch([read_bytes(p) for p in paths], sources=[str(p) for p in paths])
        return evaluate(dataset.labels, np.asarray(scores), class_names=self.class_names, thresholds=threshold)

    def close(self) -> None:
        """Release resources (a SageMaker predictor deletes its endpoint)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
