"""catdog export: fp32 parity against PyTorch on real photos, int8 parity, refusal when parity fails."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from catdog import export as export_module
from catdog.export import ExportError, check_images, export
from catdog.models import load_model_dir
from catdog.predict import Predictor
from catdog.preprocess import Preprocess

from conftest import run_catdog


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_int8_calibration_photos_are_not_the_check_photos(samples_dir: Path) -> None:
    pre, classes = Preprocess(), ["cat", "dog"]
    check, labels = check_images(samples_dir, pre, classes, 10)
    calibration, _ = check_images(samples_dir, pre, classes, 10, others=True)
    assert len(check) == len(calibration) == 10 and set(labels) == {0, 1}
    assert not any(np.array_equal(a, b) for a in check for b in calibration)


def test_fp32_file_matches_pytorch_on_real_photos(onnx_model_file: Path, trained_model_dir: Path, samples_dir: Path):
    module, config = load_model_dir(trained_model_dir)
    batch, _ = check_images(samples_dir, Preprocess.from_dict(config["preprocess"]), config["classes"], 40)
    with torch.inference_mode():
        ref_logits, ref_pet = module(torch.from_numpy(batch))
    sess = ort.InferenceSession(str(onnx_model_file), providers=["CPUExecutionProvider"])
    logits, pet = sess.run(["logits", "pet_score"], {"input": batch})
    assert np.abs(_probs(logits) - _probs(ref_logits.numpy())).max() <= 1e-4
    assert np.abs(pet - ref_pet.numpy()).max() <= 1e-4
    check = json.loads(sess.get_modelmeta().custom_metadata_map["parity_check"])
    assert check["fp32_max_gap"] <= 1e-4 and check["n_check"] == 64


def test_refuses_to_write_when_parity_fails(trained_model_dir: Path, samples_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(export_module, "FP32_MAX_GAP", 0.0)  # no real export is bit-exact
    out = tmp_path / "refused.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch by .* nothing was written"):
        export(trained_model_dir, out, check_dir=samples_dir, n_check=8)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_errors(trained_model_dir: Path, tmp_path: Path) -> None:
    no_data = run_catdog("export", str(trained_model_dir), "--out", str(tmp_path / "m.onnx"))
    assert no_data.returncode == 2 and "--check-data" in no_data.stderr
    wrong_format = run_catdog("export", str(trained_model_dir), "--format", "tflite")
    assert wrong_format.returncode == 2 and "tflite" in wrong_format.stderr
    missing = run_catdog("export", str(tmp_path / "nowhere"), "--check-data", str(tmp_path))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_int8_export_of_the_builtin_model_meets_the_floor_or_refuses(dev_dir: Path, samples_dir: Path, tmp_path):
    """int8 either passes the issue's floor or is refused with the numbers; never a bad file.

    Measured on the built-in model: 99.0-99.5% label agreement on 400 dev photos depending on the
    calibration, so both outcomes are possible; either way the quantized model must be close.
    """
    out = tmp_path / "int8.onnx"
    done = run_catdog(
        "export", "--int8", "--out", str(out), "--check-data", str(dev_dir), "--check-images", "400", "--json"
    )
    if done.returncode != 0:
        found = re.search(r"agrees with fp32 on ([\d.]+)% of 400 photos", done.stderr)
        assert found and done.returncode == 2 and "nothing was written" in done.stderr, done.stderr
        assert float(found.group(1)) >= 98.0 and not out.exists()
        return
    report = json.loads(done.stdout)
    assert report["agreement"] >= 0.995 and report["accuracy_fp32"] - report["accuracy_int8"] <= 0.3
    # Independently, on photos the check never saw (full-size samples), through the Predictor:
    fp32 = [p.label for p in Predictor.load(None).predict_paths(sorted(map(str, samples_dir.rglob("*.jpg"))))]
    int8 = [p.label for p in Predictor.load(out).predict_paths(sorted(map(str, samples_dir.rglob("*.jpg"))))]
    assert np.mean([a == b for a, b in zip(fp32, int8)]) >= 0.95
    assert out.stat().st_size < 0.5 * 18_000_000
