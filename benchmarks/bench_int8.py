"""How faithful `catdog export --int8` is: the built-in model quantized as export does it, on many dev photos.

Export itself checks int8 on 2,000 photos (where a folder has them) and refuses a file below its
floors; this benchmark measures the same two figures (2,000 photos in full mode, 300 in quick mode)
without refusing: the share of final labels (cat, dog, neither) on which int8 agrees with fp32
(floor >= 99.5 %) and the accuracy it loses (floor <= 0.3 points). Calibration photos (64) come
from positions the check never uses. Beside them, the gate's other side: which of the 22 non-pet
pictures each file turns away.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Result, need_dev_data, nonpet_pictures, turned_away

COMMAND = "python -m benchmarks int8"


def run(quick: bool) -> list[Result]:
    from catdog.export import (
        CALIBRATION_IMAGES,
        INT8_MAX_ACCURACY_DROP,
        INT8_MIN_AGREEMENT,
        _quantize,
        check_images,
        int8_fidelity,
    )
    from catdog.inference.onnx_export import export_onnx
    from catdog.onnx_backend import _torch_source
    from catdog.preprocess import Preprocess

    dev = need_dev_data()
    n = 300 if quick else 2000
    _, _, load = _torch_source(None)
    module, config = load()
    pre, classes = Preprocess.from_dict(config["preprocess"]), list(config["classes"])
    batch, labels = check_images(dev, pre, classes, n)
    calibration, _ = check_images(dev, pre, classes, CALIBRATION_IMAGES, others=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(module, config, fp32)
        _quantize(fp32, int8, calibration, Path(tmp), config)
        fidelity = int8_fidelity(fp32, int8, [(batch, labels)], config)  # what export checks, without refusing
        pictures = nonpet_pictures()
        nonpet_fp32, nonpet_int8 = turned_away(fp32, pictures), turned_away(int8, pictures)
    agreement = 100 * fidelity["agreement"]
    accuracy_fp32, accuracy_int8 = 100 * fidelity["accuracy_fp32"], 100 * fidelity["accuracy_int8"]
    drop = accuracy_fp32 - accuracy_int8
    ref, got = fidelity["labels_fp32"], fidelity["labels_int8"]
    flips = [(a, b) for a, b in zip(ref, got) if a != b]
    gate_flips = sum("neither" in pair for pair in flips)
    notes = (
        f"{len(batch)} dev photos; {len(flips)} disagree, {gate_flips} of them across the neither gate; "
        f"accuracy fp32 {accuracy_fp32:.2f} %, int8 {accuracy_int8:.2f} %"
    )
    nonpet_notes = (
        f"fp32 file turns away {len(nonpet_fp32)}; lets through "
        f"{sorted(set(pictures) - set(nonpet_fp32))}; int8 differs on {sorted(set(nonpet_fp32) ^ set(nonpet_int8))}"
    )
    return [
        Result("int8", f"int8 label agreement with fp32, built-in model, {len(batch)} photos", round(agreement, 2),
               "%", COMMAND, f">= {100 * INT8_MIN_AGREEMENT:g} %", agreement >= 100 * INT8_MIN_AGREEMENT, notes=notes),
        Result("int8", f"int8 accuracy drop, built-in model, {len(batch)} photos", round(drop, 2), "points",
               COMMAND, f"<= {100 * INT8_MAX_ACCURACY_DROP:g}", drop <= 100 * INT8_MAX_ACCURACY_DROP + 1e-7,
               notes=notes),
        Result("int8", f"int8 non-pet pictures turned away (fp32: {len(nonpet_fp32)})", len(nonpet_int8),
               f"of {len(pictures)}", COMMAND, notes=nonpet_notes),
    ]  # fmt: skip
