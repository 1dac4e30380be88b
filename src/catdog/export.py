"""``catdog export``: a self-contained ONNX file, checked on real photos before it is written.

The export itself (:class:`~catdog.inference.onnx_export.ExportModule`, :func:`export_onnx`) lives in
:mod:`catdog.inference.onnx_export`, which the cached export of ``catdog predict`` uses too; this module
adds the checks on real photos and int8.

- fp32: the largest |Δprobability| against PyTorch over the check photos must be ≤ 1e-4.
- int8 (ONNX Runtime static quantization, QDQ, per-channel weights, calibrated on 64 real
  photos, or down to 32 in a small folder so that 200 are left to check it): labels must agree with fp32
  on ≥ 99.5% of the check photos and accuracy must stay within 0.3 points. A model that fails is not
  written, and the message says by how much. Fewer than 200 check photos cannot show the floor, so they are
  refused before any work: counted from the model's record and the folder's names, before torch and the
  model load (seconds on a small CPU).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from catdog.data.layout import DatasetError, LabelledFile, discover
from catdog.errors import CatdogError, ModelError
from catdog.fsutil import atomic_write, counted, printable, recorded_path
from catdog.images import ImageError
from catdog.inference.model_cache import torch_source
from catdog.inference.onnx_session import onnx_model_fn, session, set_metadata
from catdog.inference.predictor import Predictor
from catdog.preprocess import Preprocess, normalize, stack_uint8, to_uint8

FP32_MAX_GAP = 1e-4
INT8_MIN_AGREEMENT = 0.995
INT8_MAX_ACCURACY_DROP = 0.003  # a share of the check photos: 0.3 percentage points
CALIBRATION_IMAGES = 64
# A folder too small for 64 photos to calibrate and 200 to check calibrates int8 on fewer, down to half, so that
# the check keeps its 200. Half costs nothing measurable: the built-in model's int8 agreed with fp32 on 99.75 % of
# 2,000 dev photos calibrated on 32, 99.70 % on 64 (2026-12-06, 2-core Intel Xeon with AMX; the same 2,000, none
# calibrating).
FEWEST_CALIBRATION_IMAGES = CALIBRATION_IMAGES // 2
FP32_CHECK_IMAGES = 300
# int8 flips ~0.4 % of labels (photos on a decision boundary): on 300 photos one flip more or less
# decides the 99.5 % floor, so int8 agreement is measured on more photos, decoded a chunk at a time.
INT8_CHECK_IMAGES = 2000
# The fewest check photos on which the floor can be met with a label changed: on fewer, one change is below
# it, and none does not show it (a head fitted on 68 photos agreed on all 9 photos a 73-photo folder left to
# check, and on 99.15 % of 2,000 dev photos).
INT8_FLOOR_PHOTOS = round(1 / (1 - INT8_MIN_AGREEMENT))
SMALLEST_INT8_FOLDER = FEWEST_CALIBRATION_IMAGES + INT8_FLOOR_PHOTOS
_INT8_FLOOR = (
    f"int8 must agree with fp32 on {INT8_MIN_AGREEMENT:.1%} of labels, which fewer than {INT8_FLOOR_PHOTOS} check "
    "photos cannot show"
)


class ExportError(CatdogError):
    """An export that failed its parity check; ``str(err)`` says by how much."""


@dataclass
class ExportReport:
    path: str
    n_check: int
    fp32_max_gap: float
    int8: bool = False
    n_calibration: int | None = None
    n_check_int8: int | None = None
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    agreement: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_files(
    data_dir: str | os.PathLike, classes: list[str], n: int, *, others: bool = False, exclude: Iterable = ()
) -> list:
    """Up to ``n`` photos evenly spread over the folder, as ``(path, class index or -1)``.

    In a folder of at least ``2n`` photos they come from the even positions, or with ``others``
    from the odd ones: calibration photos that the parity check never sees. ``exclude``: paths
    never to choose (the calibration photos, in a folder too small for the split).
    """
    found = discover(data_dir, image_files_only=True, labels_optional=True).files
    return _spread(found, classes, n, others=others, exclude=exclude)


def _spread(found: list[LabelledFile], classes: list[str], n: int, *, others: bool, exclude: Iterable) -> list:
    """:func:`check_files` on a folder's ``found`` files, listed once by the caller."""
    excluded = {str(path) for path in exclude}
    files = [item for item in found if str(item.path) not in excluded]
    if len(files) >= 2 * n:
        files = files[1::2] if others else files[0::2]
    step = max(1, len(files) // n)
    chosen = files[::step][:n] if len(files) > n else files
    return [(item.path, classes.index(item.label) if item.label in classes else -1) for item in chosen]


def check_chunks(
    data_dir: str | os.PathLike,
    pre: Preprocess,
    classes: list[str],
    n: int,
    *,
    others: bool = False,
    chunk: int = 64,
    exclude: Iterable = (),
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """The photos of :func:`check_files` as model-input batches of up to ``chunk`` and their labels."""
    return decode_chunks(check_files(data_dir, classes, n, others=others, exclude=exclude), pre, data_dir, chunk)


def decode_chunks(
    chosen: list, pre: Preprocess, data_dir: str | os.PathLike, chunk: int = 64
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """``(path, label)`` photos as model-input batches of up to ``chunk`` and their labels.

    Unreadable photos are left out. Raises DatasetError when none of ``data_dir``'s is readable.
    """
    any_read = False
    for start in range(0, len(chosen), chunk):
        squares, labels = [], []
        for path, label in chosen[start : start + chunk]:
            try:
                squares.append(to_uint8(path, pre))
            except ImageError:
                continue  # an unreadable photo is simply not used for the check
            labels.append(label)
        if squares:
            any_read = True
            yield normalize(stack_uint8(squares), pre), labels
    if not any_read:
        raise DatasetError(f"'{data_dir}' holds no readable photo to check the export against.")


def check_images(
    data_dir: str | os.PathLike, pre: Preprocess, classes: list[str], n: int, *, others: bool = False
) -> tuple[np.ndarray, list]:
    """:func:`check_chunks` in one batch."""
    return in_one_batch(check_chunks(data_dir, pre, classes, n, others=others))


def in_one_batch(chunks: Iterable[tuple[np.ndarray, list[int]]]) -> tuple[np.ndarray, list]:
    """Batches of :func:`decode_chunks` as one batch and one list of labels."""
    chunks = list(chunks)
    return np.concatenate([batch for batch, _ in chunks]), [label for _, labels in chunks for label in labels]


def default_check_dir(config: dict) -> str | None:
    """The training data recorded in a model's config, when it is still there."""
    for key in ("data_dir", "data_root", "train_data", "data"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("root") or value.get("dir") or value.get("path")
        folder = recorded_path(value) if isinstance(value, str) else None
        if folder is not None and Path(folder).is_dir():
            return folder
    return None


def export(
    model: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    int8: bool = False,
    check_dir: str | os.PathLike | None = None,
    n_check: int | None = None,
) -> ExportReport:
    """Export the built-in model (``None``) or a model directory to ``out``; see the module docstring.

    ``n_check``: photos for the parity checks (default: FP32_CHECK_IMAGES against PyTorch,
    INT8_CHECK_IMAGES for int8's agreement with fp32).
    """
    from catdog.models import read_config
    from catdog.models.files import builtin_model_config, builtin_name

    # The model's record, read without torch: the check photos are chosen and counted before the model loads.
    shipped = builtin_name(model)
    record = builtin_model_config(shipped) if shipped is not None else read_config(model)
    check_dir = check_dir or default_check_dir(record)
    if check_dir is None:
        raise ExportError(
            "The export is checked on real photos before it is written: give a folder of labelled photos "
            "with --check-data."
        )
    classes = list(record["classes"])
    # Listed once, for the fp32 check and int8's alike.
    found = discover(check_dir, image_files_only=True, labels_optional=True).files
    if int8:  # chosen first: a folder too small for both is refused before any work
        calibration_photos, int8_photos = int8_split(found, classes, n_check)
        if len(int8_photos) < INT8_FLOOR_PHOTOS:
            raise ExportError(_too_few_for_int8(check_dir, len(calibration_photos), len(int8_photos), n_check))
    from catdog.inference.onnx_export import export_onnx  # torch and timm: seconds, so only now

    _, _, load = torch_source(model)
    module, config = load()
    pre = Preprocess.from_dict(config["preprocess"])
    fp32_photos = _spread(found, classes, n_check or FP32_CHECK_IMAGES, others=False, exclude=())
    batch, _ = in_one_batch(decode_chunks(fp32_photos, pre, check_dir))
    # PyTorch on hundreds of photos takes minutes on a loaded CPU, which passed in silence before. Said once the
    # photos are read, so a check folder that is missing or holds none is still refused in one sentence.
    checked_on = f"{counted(len(batch), 'photo')} of '{check_dir}'"
    print(printable(f"Exporting to ONNX; checking it against PyTorch on {checked_on} first."), file=sys.stderr)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(module, config, fp32)
        gap = _chunked_gap(module, session(fp32), batch)
        if not gap <= FP32_MAX_GAP:
            raise ExportError(
                f"The ONNX model differs from PyTorch by {gap:.2g} in probability on {counted(len(batch), 'photo')} "
                f"(limit {FP32_MAX_GAP:g}); nothing was written."
            )
        report = ExportReport(path=str(out), n_check=len(batch), fp32_max_gap=gap, int8=int8)
        final = fp32
        if int8:
            final = Path(tmp) / "int8.onnx"
            calibration, _ = in_one_batch(decode_chunks(calibration_photos, pre, check_dir))
            report.n_calibration = len(calibration)  # the photos read: an unreadable one calibrates nothing
            # Quantizing and checking int8 on up to 2,000 photos take minutes more, which passed in silence.
            int8_on = f"up to {counted(len(int8_photos), 'photo')}"
            print(
                f"Quantizing to int8 on {counted(len(calibration), 'photo')}; checking it against fp32 on {int8_on}.",
                file=sys.stderr,
            )
            _quantize(fp32, final, calibration, Path(tmp), config)
            _check_int8(fp32, final, decode_chunks(int8_photos, pre, check_dir), config, report)
        _write(final, out, report)
    return report


def int8_split(found: list[LabelledFile], classes: list[str], n_check: int | None = None) -> tuple[list, list]:
    """The photos of a check folder's ``found`` files that calibrate int8 and the others that check it, as
    :func:`check_files` gives them.

    64 calibrate it, or in a folder of fewer than 264 what 200 check photos leave, down to 32: a folder of
    240 photos was refused though 40 could calibrate int8 and 200 check it.
    """
    n_calibration = max(FEWEST_CALIBRATION_IMAGES, min(CALIBRATION_IMAGES, len(found) - INT8_FLOOR_PHOTOS))
    calibration = _spread(found, classes, n_calibration, others=True, exclude=())
    exclude = [path for path, _ in calibration]
    return calibration, _spread(found, classes, n_check or INT8_CHECK_IMAGES, others=False, exclude=exclude)


def _too_few_for_int8(check_dir: str | os.PathLike, n_calibration: int, n_check: int, asked: int | None) -> str:
    """Why int8 cannot be checked on ``n_check`` photos, and what to give instead, in one sentence."""
    floor = f"{_INT8_FLOOR} (on fewer, one changed label is already below it)"
    if asked is not None and asked < INT8_FLOOR_PHOTOS:
        return f"--check-images {asked} is too few for --int8: {floor}; give {INT8_FLOOR_PHOTOS} or more."
    return (
        f"{floor}; '{check_dir}' has {n_calibration + n_check} photos, {n_calibration} to calibrate int8 and "
        f"{n_check} to check it: give --check-data at least {SMALLEST_INT8_FOLDER} photos like "
        "those the model will see (they need no labels: a subfolder of any name will do), or export fp32 "
        "without --int8."
    )


def _chunked_gap(module, sess, batch: np.ndarray, chunk: int = 32) -> float:
    from catdog.inference.onnx_export import max_gap

    return max(max_gap(module, sess, batch[i : i + chunk]) for i in range(0, len(batch), chunk))


def _quantize(fp32: Path, out: Path, calibration: np.ndarray, tmp: Path, config: dict) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on real photos; ``out`` carries
    the Predictor's settings from ``config`` as the fp32 file does.

    Everything from the global pooling on stays fp32 (the heads, the gate's softmax and sum):
    a tiny share of the compute, and the pet score (a sum over 123 ImageNet classes) is sensitive to
    its rounding. So do the stem and the first block (see below). Depthwise convolutions get 8-bit
    weights, the others 7-bit. Measured on the built-in model, 2,000 dev photos: 99.6 % label
    agreement with fp32, 0.15 points of accuracy lost (``python -m benchmarks int8``).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: calibration[i : i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)

    graph = onnx.load(str(prepared)).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]
    # Everything from the global pooling on (the classifier layers, the gate's softmax and sum)
    # stays fp32: a tiny share of the compute, and an 8-bit softmax rounds each of the 1,000 ImageNet
    # probabilities to a multiple of about 1/255, so the many small ones the pet score sums became 0
    # (the int8 pet score was ~17 % low near the gate's threshold, and most int8 flips were that).
    heads = [node.name for node in _after_pooling(graph)]
    heads += [node.name for node in graph.node if node.op_type in ("Gemm", "MatMul")]
    # The stem and the first block (timm names: conv_stem, blocks.0) run at the highest resolution and
    # every later layer inherits their rounding. Keeping them fp32 (the first convolution alone for
    # other networks) raises label agreement with fp32 on 2,000 dev photos from 99.1% to 99.6% (with
    # the fp32 tail above and the 8-bit depthwise weights below) for about 5% of the compute.
    early = [n.name for n in convs if "conv_stem" in n.input[1] or ".blocks.0." in n.input[1]]
    heads += early or [n.name for n in convs[:1]]
    # Without VNNI (AVX2 only), ONNX Runtime's u8s8 GEMM kernel (pointwise and dense convolutions) adds
    # pairs of products in saturating 16 bits; 7-bit weights (reduce_range) avoid it at no speed cost:
    # 8-bit weights there lowered agreement to 98.6%. Depthwise convolutions run in another kernel that
    # widens to 16 bits and accumulates in 32 (MLAS qdwconv), so they keep all 8 bits: their 3x3 filters
    # have only 9 weights per channel, and the 8th bit cut the mean pet-score error by a sixth.
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    depthwise = [
        n.input[1]
        for n in convs
        if shapes.get(n.input[1], [0, 0])[1] == 1
        and any(a.name == "group" and a.i == shapes[n.input[1]][0] > 1 for a in n.attribute)
    ]
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=heads,
        reduce_range=True,
        # "axis" must be repeated: an override without it drops the per-channel axis (scales on axis 1).
        extra_options={"TensorQuantOverrides": {name: [{"reduce_range": False, "axis": 0}] for name in depthwise}},
    )
    proto = onnx.load(str(out))
    set_metadata(proto, config)  # quantization tools do not promise to keep metadata_props
    onnx.save_model(proto, str(out))


def _after_pooling(graph) -> list:
    """The nodes that compute from a global average pooling on: the heads, and the gate's softmax and sum.

    Found by data flow, not position: with a pristine gate, the gate's nodes come before the model's
    own last convolution (see ``GatedClassifier.parts``).
    """
    tainted: set[str] = set()
    after = []
    for node in graph.node:  # ONNX keeps nodes in topological order
        if node.op_type in ("ReduceMean", "GlobalAveragePool") or tainted.intersection(node.input):
            after.append(node)
            tainted.update(node.output)
    return after


def _labels(model_fn, batch: np.ndarray, config: dict) -> list[str]:
    """Final labels (after the gate) through the one outputs → Prediction path."""
    predictor = Predictor(
        model_fn=model_fn,
        classes=list(config["classes"]),
        pre=Preprocess.from_dict(config["preprocess"]),
        temperature=float(config.get("temperature") or 1.0),
        gate_threshold=(config.get("gate") or {}).get("threshold"),
    )
    out = []
    for i in range(0, len(batch), 32):
        outputs = model_fn(batch[i : i + 32])
        out += [p.label for p in predictor.to_predictions(outputs, [""] * len(outputs.logits))]
    return out


def int8_fidelity(fp32: Path, int8: Path, chunks: Iterable[tuple[np.ndarray, list[int]]], config: dict) -> dict:
    """Final labels of both models on the photos of ``chunks``: the share that agree and each one's accuracy
    (shares, 0 to 1, as every figure in catdog's JSON)."""
    classes = list(config["classes"])
    fp32_fn, int8_fn = onnx_model_fn(session(fp32)), onnx_model_fn(session(int8))
    ref, got, truth = [], [], []
    for batch, labels in chunks:
        truth += [classes[y] if y >= 0 else None for y in labels]
        ref += _labels(fp32_fn, batch, config)
        got += _labels(int8_fn, batch, config)
    # Accuracy as `catdog evaluate` has it: on the photos of the model's classes (a `neither` folder's photos
    # have no class to be right about; the agreement covers them).
    pets = [i for i, t in enumerate(truth) if t is not None]

    def accuracy(labels: list[str]) -> float | None:
        return float(np.mean([labels[i] == truth[i] for i in pets])) if pets else None

    return {
        "n": len(truth),
        "agreement": float(np.mean([a == b for a, b in zip(ref, got)])),
        "accuracy_fp32": accuracy(ref),
        "accuracy_int8": accuracy(got),
        "labels_fp32": ref,
        "labels_int8": got,
    }


def _check_int8(fp32: Path, int8: Path, chunks, config: dict, report: ExportReport) -> None:
    fidelity = int8_fidelity(fp32, int8, chunks, config)
    if fidelity["n"] < INT8_FLOOR_PHOTOS:  # enough files were chosen, but unreadable ones are left out
        raise ExportError(
            f"Only {fidelity['n']} of the photos chosen to check int8 could be read, and {_INT8_FLOOR}: "
            "give --check-data more readable photos; nothing was written."
        )
    report.agreement, report.n_check_int8 = fidelity["agreement"], fidelity["n"]
    report.accuracy_fp32, report.accuracy_int8 = fidelity["accuracy_fp32"], fidelity["accuracy_int8"]
    drop = 0.0 if report.accuracy_fp32 is None else report.accuracy_fp32 - report.accuracy_int8
    if report.agreement < INT8_MIN_AGREEMENT or drop > INT8_MAX_ACCURACY_DROP + 1e-9:  # 1e-9: float rounding
        accuracy = (
            ""
            if report.accuracy_fp32 is None
            else f" and its accuracy is {report.accuracy_int8:.1%} against {report.accuracy_fp32:.1%} (allowed drop "
            f"{100 * INT8_MAX_ACCURACY_DROP:g} points)"
        )
        raise ExportError(
            f"The int8 model agrees with fp32 on {report.agreement:.1%} of {fidelity['n']} photos (need "
            f"{INT8_MIN_AGREEMENT:.1%}){accuracy}; nothing was written."
        )


def _write(source: Path, out: Path, report: ExportReport) -> None:
    import onnx

    proto = onnx.load(str(source))
    check = {k: v for k, v in report.to_dict().items() if k != "path"}
    proto.metadata_props.add(key="parity_check", value=json.dumps(check))
    atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp)))


__all__ = ["ExportError", "ExportReport", "ModelError", "export"]
