"""The local predictor: loads a ``model.tar.gz`` of the algorithm and answers like its endpoint does."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._parallel import usable_cores
from ..exceptions import ArtifactError, UsageError, require
from ..images import decode_image
from .artifact import read_metadata, read_model_tar
from .metadata import metadata_resize
from .network import ResNetV2, load_mxnet_state_dict, to_network_input
from .predictor_base import Predictor
from .transforms import AugmentOptions, inference_transform

require("torch", extra="local")

import torch  # noqa: E402

__all__ = ["LocalPredictor", "CONTENT_TYPES", "RUNTIMES", "PRECISIONS", "check_precision"]

CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")


RUNTIMES = ("torch", "onnxruntime", "openvino")


PRECISIONS = ("fp32", "int8", "bf16")


def check_precision(runtime: str, precision: str) -> None:
    """A one-line UsageError for a precision the runtime (or this CPU) does not run."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "int8" and runtime == "torch":
        raise UsageError("precision='int8' runs the int8 export on runtime='openvino' or 'onnxruntime'; "
                         "runtime='torch' is float32.")
    if precision == "bf16":
        if runtime != "openvino":
            raise UsageError(f"precision='bf16' is OpenVINO's inference precision hint; use runtime='openvino' "
                             f"(not {runtime!r}).")
        from .cpu_flags import require_bf16

        require_bf16("precision")


class LocalPredictor(Predictor):
    """``predict(jpeg_bytes) -> [p_0, ..., p_{C-1}]`` with the endpoint's preprocessing (plain resize to H x W).

    ``output`` overrides the activation read from the artifact's symbol ("sigmoid" for multi-label, "softmax");
    ``image_shape`` is needed only for artifacts without model-shapes.json. Class names, tuned thresholds and the
    ``resize`` of ``AugmentOptions(inference="centre_crop")`` come from the ``model-metadata.json`` written beside the
    artifact when they are not given. Scores that are not finite are refused (:class:`ArtifactError`), never returned.

    Speed: batches decode on a thread pool (``decode_threads``, default: the cores, at most 8) and run under
    ``torch.inference_mode`` in channels-last layout. On the CPU two runtimes are faster: ``runtime="openvino"``
    (the ``openvino`` extra; float32, fed the decoded uint8 images) and ``runtime="onnxruntime"`` (the ``export``
    extra). Both are checked against the PyTorch network to 1e-4 when the predictor is made; the converted model is
    cached beside the artifact (``<artifact>.openvino.cache``, ``.onnxruntime.cache``: keyed on the weights and the
    versions, rebuilt when stale or damaged; ``runtime_cache=False`` converts in memory every time), so that only the
    first predictor pays for the conversion. ``precision`` ("fp32"; "int8": the int8 export that ``multilabel-ic
    export --precision int8`` wrote beside the artifact, or ``quantized_model``, made from these weights; "bf16":
    OpenVINO's bfloat16 hint, on a CPU with avx512_bf16 or amx_bf16) picks the CPU runtime's precision
    (docs/export.md). ``compile=True`` runs
    the PyTorch network through ``torch.compile`` (the first batches are slow while it compiles).
    docs/benchmarks.md has the measured figures.
    """

    def __init__(self, artifact: str | os.PathLike, *, class_names: Sequence[str] | None = None,
                 device: str | None = None, epoch: int | None = None, output: str | None = None,
                 image_shape: tuple[int, int, int] | None = None, resize: int | None = None,
                 augment: AugmentOptions = AugmentOptions(), thresholds: Sequence[float] | None = None,
                 batch_size: int = 32, runtime: str = "torch", compile: bool = False,
                 decode_threads: int | None = None, channels_last: bool = True, runtime_cache: bool = True,
                 precision: str = "fp32", quantized_model: str | os.PathLike | None = None):
        if runtime not in RUNTIMES:
            raise UsageError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}.")
        check_precision(runtime, precision)
        art = read_model_tar(artifact, epoch=epoch)
        meta = read_metadata(artifact, num_classes=art.num_classes) or {}
        if class_names is None and meta.get("class_names"):
            class_names = meta["class_names"]
        if thresholds is None and meta.get("tuned_thresholds"):
            thresholds = meta["tuned_thresholds"]
        if resize is None:  # the centre crop scores as the run's validation did: the shorter side to its resize
            resize = metadata_resize(meta)
        self.artifact = Path(artifact)
        self.label = f"the model {artifact}"
        shape = image_shape or art.image_shape
        if shape is None:
            raise ArtifactError(f"{artifact}: no model-shapes.json; pass image_shape=(C, H, W)")
        self.image_shape = tuple(shape)
        self.output = output or art.output
        if self.output not in ("sigmoid", "softmax"):
            raise UsageError(f"output must be 'sigmoid' or 'softmax', got {self.output!r}")
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in
                                                                              range(art.num_classes)]
        if len(self.class_names) != art.num_classes:
            raise ArtifactError(f"{artifact}: the model has {art.num_classes} classes but {len(self.class_names)} "
                                f"class names were given")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        c, h, w = self.image_shape
        self.model = ResNetV2(art.num_classes, art.num_layers, (c, h, w))
        try:
            load_mxnet_state_dict(self.model, {k: torch.from_numpy(v) for k, v in art.params.items()})
        except ValueError as exc:
            raise ArtifactError(f"{artifact}: {exc}") from exc
        self.model.to(self.device).eval()
        self.epoch, self.resize, self.augment = art.epoch, resize, augment
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.batch_size = batch_size
        self.runtime = runtime
        # runtime != "torch": uint8 N x H x W x C batch -> probabilities, outside PyTorch
        self._runner: Callable[[np.ndarray], np.ndarray] | None = None
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._network: Callable[[torch.Tensor], torch.Tensor] = self.model
        if runtime != "torch" and self.device.type != "cpu":
            raise UsageError(f"runtime={runtime!r} runs on the CPU; use runtime='torch' on {self.device}.")
        from .runtime_cache import cache_path

        cache = cache_path(artifact, runtime) if runtime_cache and runtime != "torch" else None
        self.precision = precision
        if precision == "int8":
            from .lowp_runtime import quantized_runner

            self._runner = quantized_runner(artifact, runtime, self.model, model=quantized_model)
        elif runtime == "onnxruntime":
            from .export import onnx_session

            session, _ = onnx_session(self.model, softmax=self.output == "softmax", image_shape=(c, h, w),
                                      cache=cache)
            self._runner = lambda batch: session.run(["probabilities"], {
                "data": np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)})[0]
        elif runtime == "openvino":
            from .openvino_runtime import openvino_runner

            self._runner, _ = openvino_runner(self.model, softmax=self.output == "softmax", image_shape=(c, h, w),
                                              cache=cache, precision=precision)
        elif compile:
            self._network = torch.compile(self.model)
        self.decode_threads = decode_threads or min(8, usable_cores())
        self._pool: ThreadPoolExecutor | None = None

    def _preprocess(self, image: bytes, source: str) -> np.ndarray:
        c, h, w = self.image_shape
        img = decode_image(image, channels=c, source=source)
        return inference_transform(img, height=h, width=w, resize=self.resize, options=self.augment)

    def _preprocess_many(self, images: Sequence[bytes], names: Sequence[str]) -> list[np.ndarray]:
        """Decode and resize a batch, on the thread pool (OpenCV releases the GIL)."""
        if len(images) == 1 or self.decode_threads <= 1:
            return [self._preprocess(img, name) for img, name in zip(images, names)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.decode_threads, thread_name_prefix="decode")
        return list(self._pool.map(self._preprocess, images, names))

    def _run(self, arrays: list[np.ndarray], names: Sequence[str] | None = None) -> list[list[float]]:
        batch = np.stack(arrays)
        if self._runner is not None:
            scores = np.asarray(self._runner(batch), dtype=float)
        else:
            with torch.inference_mode():
                x = to_network_input(torch.from_numpy(batch), self.device, channels_last=self.channels_last)
                logits = self._network(x).float()
                out = torch.sigmoid(logits) if self.output == "sigmoid" else torch.softmax(logits, dim=1)
                scores = out.cpu().numpy().astype(float)
        self._check_finite(scores, names or [f"<image {i}>" for i in range(len(arrays))])
        return scores.tolist()

    def close(self) -> None:
        """Stop the decode threads (also done when the predictor is garbage-collected)."""
        pool = getattr(self, "_pool", None)  # absent when __init__ failed
        if pool is not None:
            pool.shutdown(wait=False)
            self._pool = None

    def __del__(self):
        self.close()

    def predict(self, image: bytes, content_type: str = "application/x-image") -> list[float]:
        if content_type not in CONTENT_TYPES:
            raise UsageError(f"content type {content_type!r} is not accepted; use one of {', '.join(CONTENT_TYPES)}")
        return self._run([self._preprocess(image, "<request body>")], ["<request body>"])[0]

    def predict_batch(self, images: Sequence[bytes], *, output: str = "list",
                      sources: Sequence[str] | None = None):
        self._check_output(output)
        images = self._check_images(images, sources)
        names = list(sources) if sources is not None else [f"<image {i}>" for i in range(len(images))]
        preds: list[list[float]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            preds += self._run(self._preprocess_many(chunk, names[start:start + len(chunk)]),
                               names[start:start + len(chunk)])
        return self._format(output, preds)

    @classmethod
    def from_path(cls, artifact: str | os.PathLike, **kwargs) -> LocalPredictor:
        return cls(Path(artifact), **kwargs)

    # The two halves of predict_batch, for a caller that batches images itself (the server, multilabel_ic.serve)
    def preprocess(self, image: bytes, source: str = "<request body>") -> np.ndarray:
        """One encoded image -> the decoded, resized H x W x C uint8 array the network takes (as predict does)."""
        return self._preprocess(image, source)

    def run_batch(self, arrays: Sequence[np.ndarray]) -> list[list[float]]:
        """Arrays from :meth:`preprocess` -> their probabilities, through the network as one batch."""
        return self._run(list(arrays))
