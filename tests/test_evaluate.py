"""catdog evaluate: metrics equal scikit-learn's on a hand-made case; the report is real PNG/HTML with the numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from catdog.evaluate import _corrupt, compute_metrics, expected_calibration_error

from conftest import run_catdog


def test_metrics_match_scikit_learn_on_a_hand_made_case() -> None:
    classes = ["cat", "dog"]
    truth = ["cat", "cat", "cat", "dog", "dog", "dog"]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3]])
    predicted = ["cat", "cat", "dog", "dog", "neither", "cat"]  # one 'neither' counts as wrong
    m = compute_metrics(truth, probs, predicted, classes, [{"path": "x.jpg", "error": "bad"}])
    y = [0, 0, 0, 1, 1, 1]
    assert m["n"] == 6 and m["neither"] == 1
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    # cat: answered 3 times, 2 right; dog: answered twice, 1 right. 'neither' is a miss for recall.
    assert m["precision"]["cat"] == pytest.approx(2 / 3) and m["recall"]["cat"] == pytest.approx(2 / 3)
    assert m["precision"]["dog"] == pytest.approx(1 / 2) and m["recall"]["dog"] == pytest.approx(1 / 3)
    assert m["f1"]["macro"] == pytest.approx((2 / 3 + 0.4) / 2)
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 1]]
    assert m["confusion_columns"] == ["cat", "dog", "neither"]
    assert m["unreadable"] == [{"path": "x.jpg", "error": "bad"}]
    assert set(m) >= {"n", "accuracy", "log_loss", "roc_auc", "precision", "recall", "f1", "confusion_matrix"}
    assert {"classes", "ece", "unreadable"} <= set(m)


def test_expected_calibration_error() -> None:
    # Always 90% confident: right 90% of the time is calibrated, right half the time is 0.4 off.
    confidence = np.full(10, 0.9)
    assert expected_calibration_error(confidence, np.array([1] * 9 + [0])) == pytest.approx(0.0)
    assert expected_calibration_error(confidence, np.array([1, 0] * 5)) == pytest.approx(0.4)


@pytest.mark.parametrize("name", ["brightness", "contrast", "blur", "noise", "jpeg", "rotation", "crop"])
def test_corruptions_grow_with_severity(name: str, cat_photo: Path) -> None:
    import torch

    from catdog.preprocess import Preprocess, stack_uint8, to_uint8

    clean = torch.from_numpy(stack_uint8([to_uint8(cat_photo, Preprocess())]))
    changes = [(_corrupt(name, s, clean).float() - clean.float()).abs().mean().item() for s in (1, 2, 3)]
    assert 0 < changes[0] < changes[1] < changes[2]
    assert _corrupt(name, 2, clean).dtype == torch.uint8 and _corrupt(name, 2, clean).shape == clean.shape


@pytest.fixture(scope="module")
def eval_dir(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 40 full-size samples (cat/, dog/) plus one broken file."""
    root = tmp_path_factory.mktemp("eval") / "photos"
    shutil.copytree(samples_dir, root)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_cli_json_and_report(onnx_model_file: Path, eval_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = run_catdog(
        "evaluate", str(onnx_model_file), str(eval_dir), "--json", "--out", str(out), "--robustness",
        "--robustness-samples", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 40 and result["classes"] == ["cat", "dog"]
    assert [u["path"] for u in result["unreadable"]] == [str(eval_dir / "cat" / "broken.jpg")]
    assert sum(map(sum, result["confusion_matrix"])) == 40
    assert result["accuracy"] >= 0.85  # a real model on real photos
    assert set(result["robustness"]["accuracy"]) == {
        "brightness",
        "contrast",
        "blur",
        "noise",
        "jpeg",
        "rotation",
        "crop",
    }
    for name in ("confusion_matrix.png", "roc.png", "reliability.png", "mistakes.png", "robustness.png"):
        assert Image.open(out / name).format == "PNG"
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert f"{result['accuracy']:.4f}" in page and f"{result['log_loss']:.4f}" in page
    assert "data:image/png;base64," in page and "broken.jpg" in page
    assert 'src="http' not in page and "src='http" not in page  # self-contained
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == result["accuracy"]


def test_cli_text_output_and_errors(trained_model_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    done = run_catdog("evaluate", str(trained_model_dir), str(eval_dir / "dog"), env={"CATDOG_BACKEND": "torch"})
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "dog" in done.stdout
    foxes = tmp_path / "foxes" / "fox"
    foxes.mkdir(parents=True)
    shutil.copy(eval_dir / "cat" / "cat.1.jpg", foxes / "a.jpg")
    wrong = run_catdog("evaluate", str(trained_model_dir), str(foxes.parent), env={"CATDOG_BACKEND": "torch"})
    assert wrong.returncode == 2 and "fox" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = run_catdog("evaluate", str(trained_model_dir), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
