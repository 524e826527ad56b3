"""Trust in what is read and answered: every image format OpenCV decodes is sized before decoding, an artifact is
read unambiguously and only as far as needed, model-metadata.json is checked field by field, non-finite weights or
scores are refused on every path, and evaluate reproduces a run's mAP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_bombs import BOMB_SIZE, BOMBS, GOOD_EXTENSIONS, bomb, encoded, gif, good_j2k, jp2

from multilabel_ic import ImageDecodeError
from multilabel_ic import images as images_module
from multilabel_ic.image_header import HeaderError, header_size
from multilabel_ic.images import decode_image

# --- images: every format OpenCV decodes has its size checked before decoding

# Every extension OpenCV's imencode may know; the ones this build encodes are the formats it decodes too.
CANDIDATE_EXTENSIONS = (".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".apng", ".webp", ".avif", ".pbm",
                        ".pgm", ".ppm", ".pxm", ".pnm", ".pam", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr",
                        ".pic", ".gif", ".jxl", ".qoi", ".j2k", ".j2c", ".jpx")


def _opencv_formats() -> list[str]:
    found = []
    for ext in CANDIDATE_EXTENSIONS:
        try:
            ok = cv2.haveImageWriter("x" + ext)
        except cv2.error:
            ok = False
        if ok:
            found.append(ext)
    return found


def test_every_format_this_opencv_writes_is_one_the_header_reader_sizes():
    """The class: each format of this OpenCV build (its writers; each has a reader) is sized from its header."""
    formats = _opencv_formats()
    assert {".jpg", ".png", ".bmp", ".tif", ".webp", ".hdr", ".pam", ".pfm", ".ras", ".gif"} <= set(formats)
    for ext in formats:
        img = np.zeros((48, 64), np.float32) if ext in (".hdr", ".pic", ".pfm", ".exr") else np.zeros((48, 64), np.uint8)
        ok, buf = cv2.imencode(ext, img if ext in (".pgm", ".pbm") else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        if not ok:
            continue
        assert header_size(buf.tobytes())[1:] == (64, 48), ext


@pytest.mark.parametrize("ext", [*GOOD_EXTENSIONS, ".j2k"])
def test_a_good_file_of_each_format_is_sized_and_decoded(ext):
    data = good_j2k() if ext == ".j2k" else encoded(ext)
    assert header_size(data)[1:] == (64, 48)
    assert decode_image(data, source="x" + ext).shape == (48, 64, 3)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_header_bomb_of_each_format_is_refused_before_decoding(name, monkeypatch):
    def never(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(images_module, "imdecode", never)
    w, h = BOMB_SIZE[name]
    with pytest.raises(ImageDecodeError, match=rf"bomb: the image has {w * h} pixels, more than the limit of "):
        decode_image(bomb(name), source="bomb")


def test_a_gif_frame_larger_than_its_screen_counts():
    assert header_size(gif(64, 48, frame=(30000, 30000)))[1:] == (30000, 30000)


def test_a_jpeg2000_is_sized_by_its_codestream_not_only_its_ihdr_box():
    """Pillow reports the ihdr box (64 x 48); OpenJPEG allocates what the codestream's SIZ says."""
    import io

    from PIL import Image

    data = jp2(30000, 30000)
    assert Image.open(io.BytesIO(data)).size == (64, 48)
    assert header_size(data)[1:] == (30000, 30000)


@pytest.mark.parametrize("data", [b"P6\nabc", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n", b"P7\nDEPTH 3\nENDHDR\n",
                                  b"BM\0\0", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDX", b"\xff\xd8\xff\xe0garbage",
                                  b"\0\0\0\x0cjP  \r\n\x87\n"], ids=lambda d: repr(d[:6]))
def test_a_known_signature_with_an_unreadable_header_is_refused_not_decoded(data, monkeypatch):
    with pytest.raises(HeaderError):
        header_size(data)
    monkeypatch.setattr(images_module, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ImageDecodeError, match="so its size cannot be checked before decoding"):
        decode_image(data, source="odd")


def test_bytes_no_decoder_takes_are_not_an_image():
    assert header_size(b"<html>not found</html>") is None
    with pytest.raises(ImageDecodeError, match="page.html: not a decodable image"):
        decode_image(b"<html>not found</html>", source="page.html")


def test_opencvs_own_limit_is_set_from_the_librarys_before_cv2_loads(tmp_path):
    """The second line of defence: with the library's check off, OpenCV itself refuses more pixels than the limit
    the process started with, and the error says how to raise it."""
    code = ("import os, sys; import multilabel_ic; from multilabel_ic.images import decode_image, set_max_pixels; "
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS']); set_max_pixels(0); "
            "sys.path.insert(0, 'tests'); from image_bombs import encoded\n"
            "try:\n    decode_image(encoded('.png'), source='x.png')\nexcept Exception as exc:\n    print(exc)")
    env = {**os.environ, "MULTILABEL_IC_MAX_PIXELS": "1000"}
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).parent.parent).stdout.splitlines()
    assert out[0] == "1000"
    assert "x.png: the image has 3072 pixels, more than OpenCV's limit OPENCV_IO_MAX_IMAGE_PIXELS=1000" in out[1]


# --- the artifact: unambiguous, finite, and read only as far as needed

def _artifact(ws, tmp: Path, *, args=None, aux=None, multi_label=True, name="m.tar.gz") -> Path:
    from multilabel_ic.model.artifact import write_model_tar

    return write_model_tar(tmp / name, {1: (args or ws.args, aux or ws.aux)}, num_classes=5, num_layers=20,
                           image_shape=(3, 28, 28), multi_label=multi_label)


def _with_value(params: dict, name: str, value: float) -> dict:
    out = {k: v.copy() for k, v in params.items()}
    out[name].flat[3] = value
    return out


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kind,name", [("arg", "stage2_unit1_conv1_weight"), ("arg", "fc1_bias"),
                                       ("aux", "bn1_moving_var")])
def test_non_finite_parameters_are_refused_naming_the_parameter(ws, tmp_path, kind, name, value):
    from multilabel_ic import ArtifactError
    from multilabel_ic.model.artifact import read_model_tar

    args = _with_value(ws.args, name, value) if kind == "arg" else None
    aux = _with_value(ws.aux, name, value) if kind == "aux" else None
    path = _artifact(ws, tmp_path, args=args, aux=aux)
    with pytest.raises(ArtifactError, match=rf"m.tar.gz:image-classification-0001.params: parameter '{kind}:{name}' "
                                            rf"holds 1 (NaN|inf) values"):
        read_model_tar(path)


def test_predict_and_evaluate_refuse_a_model_with_nan_weights_and_write_nothing(ws, tmp_path, capsys):
    from multilabel_ic.cli import main

    path = _artifact(ws, tmp_path, args={k: np.full_like(v, np.nan) for k, v in ws.args.items()})
    for argv in (["predict", "--model", str(path), str(ws.jpeg)],
                 ["predict", "--model", str(path), str(ws.jpeg), "--jsonlines"],
                 ["evaluate", "--model", str(path), "--lst", str(ws.lst), "--images", str(ws.images), "--output",
                  str(tmp_path / "eval.json")]):
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert "NaN" not in captured.out and "holds" in captured.err and "parameter 'arg:" in captured.err
    assert not (tmp_path / "eval.json").exists()


@pytest.fixture()
def nan_network(ws, monkeypatch):
    """A predictor whose network answers NaN for the second image of a batch (as an overflowing model would)."""
    from catalog_support import make_predictor

    pred = make_predictor(ws, decode_threads=1)

    def network(x):
        out = torch.zeros((x.shape[0], 5))
        out[1 if x.shape[0] > 1 else 0, 2] = float("nan")
        return out

    import torch

    monkeypatch.setattr(pred, "_network", network)
    return pred


def test_non_finite_scores_are_refused_on_every_predictor_path(ws, nan_network):
    from multilabel_ic import ArtifactError

    jpeg = ws.jpeg.read_bytes()
    model = f"the model {ws.model} gave nan as the score of 1 class\\(es\\) \\(car\\)"
    with pytest.raises(ArtifactError, match="<request body>: " + model):
        nan_network.predict(jpeg)
    for output in ("list", "jsonlines"):
        with pytest.raises(ArtifactError, match="b.jpg: " + model):
            nan_network.predict_batch([jpeg, jpeg], sources=["a.jpg", "b.jpg"], output=output)
    with pytest.raises(ArtifactError, match=model):
        nan_network.predict_labels([jpeg, jpeg])
    with pytest.raises(ArtifactError, match=model):
        nan_network.evaluate(ws.data)


class _Endpoint:
    """A SageMaker backend whose endpoint answers ``body``."""

    def __init__(self, body: bytes):
        self.body = body

    def _call(self, service, op, **kwargs):
        import io

        return {"Body": io.BytesIO(self.body)}


@pytest.mark.parametrize("body", [b"[0.1, NaN, 0.2, 0.3, 0.4]", b"[0.1, Infinity, 0.2, 0.3, 0.4]",
                                  b"[0.1, -Infinity, 0.2, 0.3, 0.4]"])
def test_an_endpoint_answering_non_finite_scores_is_refused(ws, body):
    from catalog_support import CLASSES

    from multilabel_ic import BackendError
    from multilabel_ic.backends.sagemaker.endpoint import SageMakerPredictor

    pred = SageMakerPredictor(_Endpoint(body), "ep-1", class_names=CLASSES.split(","))
    with pytest.raises(BackendError, match="endpoint ep-1 answered: score 1 is -?(nan|inf), not a finite number"):
        pred.predict(ws.jpeg.read_bytes())
    with pytest.raises(BackendError, match="endpoint ep-1 answered: score 1 is"):
        pred.evaluate(ws.data)


def test_a_predictor_subclass_answering_nan_is_refused_by_the_shared_paths(ws):
    from multilabel_ic import ArtifactError, Predictor

    class Odd(Predictor):
        class_names = ["a", "b"]
        label = "the odd predictor"

        def predict(self, image, content_type="application/x-image"):
            return [0.5, float("nan")]

    with pytest.raises(ArtifactError, match="img0: the odd predictor gave nan as the score of 1 class\\(es\\) \\(b\\)"):
        Odd().predict_batch([b"x"], sources=["img0"], output="jsonlines")
    with pytest.raises(ArtifactError, match="the odd predictor gave nan"):
        Odd().predict_labels(b"x")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_metrics_refuse_non_finite_scores(bad):
    from multilabel_ic import UsageError
    from multilabel_ic.metrics import evaluate, mean_average_precision

    labels = np.array([[1, 0], [0, 1], [1, 1]])
    scores = np.array([[0.9, 0.1], [0.2, bad], [0.7, 0.6]])
    for fn in (lambda: evaluate(labels, scores), lambda: mean_average_precision(labels, scores)):
        with pytest.raises(UsageError, match=r"scores must be finite numbers: 1 are NaN or infinite \(the first at "
                                             r"row 1, column 1\)"):
            fn()


def _tar(tmp: Path, members: list[tuple[str, bytes]], name: str = "m.tar.gz") -> Path:
    import io
    import tarfile

    path = tmp / name
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("first,second", [("a/image-classification-0001.params", "b/image-classification-0001.params"),
                                          ("image-classification-0001.params", "image-classification-0001.params"),
                                          ("image-classification-symbol.json", "x/image-classification-symbol.json"),
                                          ("model-shapes.json", "./model-shapes.json")])
def test_two_members_of_one_name_are_refused_naming_both(ws, tmp_path, first, second):
    from multilabel_ic import ArtifactError
    from multilabel_ic.model.artifact import read_model_tar

    files = ws.members()
    base = Path(first).name
    members = [(n, d) for n, d in files.items() if n != base] + [(first, files[base]), (second, files[base])]
    with pytest.raises(ArtifactError, match=f"members '{first}' and '{second}' are both a {base}; it is ambiguous"):
        read_model_tar(_tar(tmp_path, members))


def _symbol_with_head(ws, op: str, attrs: dict | None = None) -> bytes:
    import json

    sym = json.loads(ws.members()["image-classification-symbol.json"])
    head = sym["nodes"][sym["heads"][0][0]]
    head["op"] = op
    if attrs is not None:
        head["attrs"] = attrs
    return json.dumps(sym).encode()


@pytest.mark.parametrize("op,attrs", [("FullyConnected", None), ("Activation", {"act_type": "relu"}),
                                      ("Activation", None), ("MakeLoss", None), ("", None)])
def test_an_unknown_output_head_is_refused_naming_the_op_and_the_known_ones(ws, tmp_path, op, attrs):
    from multilabel_ic import ArtifactError
    from multilabel_ic.model.artifact import read_model_tar

    files = {**ws.members(), "image-classification-symbol.json": _symbol_with_head(ws, op, attrs)}
    with pytest.raises(ArtifactError, match=f"the output head of image-classification-symbol.json is the op '{op}', "
                                            f"which is not one of the algorithm's: LogisticRegressionOutput"):
        read_model_tar(_tar(tmp_path, list(files.items())))


@pytest.mark.parametrize("op,attrs,output", [("LogisticRegressionOutput", None, "sigmoid"),
                                             ("Activation", {"act_type": "sigmoid"}, "sigmoid"),
                                             ("SoftmaxOutput", None, "softmax"), ("softmax", None, "softmax")])
def test_the_known_output_heads_are_read(ws, tmp_path, op, attrs, output):
    from multilabel_ic.model.artifact import read_model_tar

    files = {**ws.members(), "image-classification-symbol.json": _symbol_with_head(ws, op, attrs)}
    assert read_model_tar(_tar(tmp_path, list(files.items()))).output == output


def _huge_member_first(ws, tmp: Path, size: int) -> Path:
    """A model.tar.gz whose first member (not part of the layout) claims ``size`` bytes, streamed: only its header
    and a little data are written, so the file is small and made at once."""
    import gzip
    import tarfile

    info = tarfile.TarInfo("logs/huge.bin")
    info.size = size
    path = tmp / "padded.tar.gz"
    path.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096))
    return path


def test_an_archive_with_gigabytes_of_other_members_is_refused_at_the_header(ws, tmp_path):
    import time

    from multilabel_ic import ArtifactError
    from multilabel_ic.model.artifact import MAX_SKIPPED_BYTES, read_model_tar

    path = _huge_member_first(ws, tmp_path, 4 << 30)
    start = time.perf_counter()
    with pytest.raises(ArtifactError, match=rf"member 'logs/huge.bin' \({4 << 30} bytes\) is not part of the "
                                            rf"algorithm's layout, and with it the archive holds more than "
                                            rf"{MAX_SKIPPED_BYTES} bytes of such files"):
        read_model_tar(path)
    assert time.perf_counter() - start < 1.0


def test_other_members_within_the_bound_are_skipped_and_only_the_chosen_epoch_is_kept(ws, tmp_path, monkeypatch):
    from multilabel_ic.model import artifact as artifact_module
    from multilabel_ic.model.artifact import read_model_tar

    files = ws.members()
    params = files["image-classification-0001.params"]
    members = [("notes/readme.txt", b"x" * (1 << 20)), *[(n, d) for n, d in files.items() if "params" not in n],
               ("image-classification-0001.params", params), ("image-classification-0003.params", params),
               ("image-classification-0002.params", params)]
    kept = []
    real_keep = artifact_module._keep
    monkeypatch.setattr(artifact_module, "_keep", lambda m, name, data: (kept.append(name), real_keep(m, name, data)))
    art = read_model_tar(_tar(tmp_path, members))
    assert (art.epoch, art.epochs_available) == (3, [1, 2, 3])
    assert [n for n in kept if n.endswith(".params")] == ["image-classification-0001.params",
                                                         "image-classification-0003.params"]
    assert read_model_tar(_tar(tmp_path, members, "n.tar.gz"), epoch=2).epoch == 2


# --- model-metadata.json: every field checked by type and size, read bounded

def _meta_beside(ws, tmp: Path, doc) -> Path:
    import json
    import shutil

    folder = tmp / "m"
    folder.mkdir(exist_ok=True)
    shutil.copy(ws.model, folder / "model.tar.gz")
    (folder / "model-metadata.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return folder / "model.tar.gz"


def test_the_written_metadata_is_read_back_unchanged(tmp_path):
    from multilabel_ic.model.metadata import read_metadata, write_metadata

    hp = {"num_classes": "2", "num_training_samples": "40", "image_shape": "3,32,32", "resize": "36",
          "mini_batch_size": "8"}
    write_metadata(tmp_path / "model.tar.gz", class_names=["a", "b"], hyperparameters=hp, thresholds=[0.25, 1.000001],
                   extra={"backend": "local", "engine": "torch"})
    meta = read_metadata(tmp_path / "model.tar.gz", num_classes=2)
    assert meta == {"class_names": ["a", "b"], "tuned_thresholds": [0.25, 1.000001], "hyperparameters": hp,
                    "backend": "local", "engine": "torch"}


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path):
    from multilabel_ic import ArtifactError
    from multilabel_ic.model.metadata import write_metadata

    with pytest.raises(ArtifactError, match=r"tuned_thresholds\[1\] must be a finite number in \[0, 1\]; got nan"):
        write_metadata(tmp_path / "model.tar.gz", class_names=["a", "b"], hyperparameters=None,
                       thresholds=[0.5, float("nan")])
    assert not (tmp_path / "model-metadata.json").exists()


def test_the_models_resize_comes_from_its_metadata_and_resize_overrides_it(ws, tmp_path):
    from catalog_support import CLASSES

    from multilabel_ic.model.predictor import LocalPredictor

    hp = {"num_classes": "5", "num_training_samples": "24", "image_shape": "3,28,28", "resize": "40", "num_layers": "20",
          "mini_batch_size": "8"}
    path = _meta_beside(ws, tmp_path, {"class_names": CLASSES.split(","), "tuned_thresholds": None,
                                       "hyperparameters": hp})
    assert LocalPredictor(path, device="cpu").resize == 40
    assert LocalPredictor(path, device="cpu", resize=64).resize == 64


def test_a_fifo_in_place_of_the_metadata_is_refused_not_waited_on(ws, tmp_path):
    from multilabel_ic import ArtifactError
    from multilabel_ic.model.metadata import read_metadata

    folder = tmp_path / "f"
    folder.mkdir()
    os.mkfifo(folder / "model-metadata.json")
    with pytest.raises(ArtifactError, match="model-metadata.json: the model metadata is a named pipe"):
        read_metadata(folder / "model.tar.gz")


def _fuzz_docs():
    from catalog_support import json_values
    from hypothesis import strategies as st

    from multilabel_ic.model.metadata import FIELDS

    names = st.lists(st.text(max_size=4), max_size=6)
    field_values = {"class_names": names | json_values, "tuned_thresholds": st.lists(
        st.floats(allow_nan=True) | st.integers(-2, 2) | st.booleans() | st.none(), max_size=6) | json_values,
                    "hyperparameters": st.dictionaries(st.sampled_from(["num_classes", "resize", "image_shape", "x"]),
                                                       st.text(max_size=3) | st.integers(-2, 40), max_size=4)
                    | json_values}
    docs = st.fixed_dictionaries({}, optional={f: field_values.get(f, json_values) for f in FIELDS})
    return docs | json_values


def test_fuzz_the_metadata_reader_finds_no_bug_path(tmp_path):
    """Structures of the wrong types and sizes: each is read or refused with an ArtifactError, nothing else."""
    import json

    from hypothesis import HealthCheck, given, settings

    from multilabel_ic import ArtifactError
    from multilabel_ic.model.metadata import read_metadata

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(doc=_fuzz_docs(), num_classes=st_num_classes())
    def run(doc, num_classes):
        (tmp_path / "model-metadata.json").write_text(json.dumps(doc))
        try:
            meta = read_metadata(tmp_path / "model.tar.gz", num_classes=num_classes)
        except ArtifactError as exc:
            assert "\n" not in str(exc) and "model-metadata.json: " in str(exc)
            return
        names = meta["class_names"]
        assert all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
        assert num_classes is None or len(names) == num_classes
        thresholds = meta["tuned_thresholds"]
        assert thresholds is None or (len(thresholds) == len(names) and all(np.isfinite(thresholds)))

    run()


def st_num_classes():
    from hypothesis import strategies as st

    return st.none() | st.integers(1, 6)
