"""Model files never execute code: our weights are safetensors; foreign pickles are refused.

A planted pickle whose ``__reduce__`` would create a marker file is put wherever catdog reads
weights (a model directory's model.safetensors, a .pth, an .onnx, train's checkpoint.pt). catdog
must refuse each with one clear sentence, and the marker must never appear. A control shows
that the payload is live: plain ``pickle.loads`` does create the marker.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catdog.models import ModelError, load_model_dir

from conftest import REPO, run_catdog
from hostile import one_sentence


class Payload:
    """Unpickling this runs ``exec`` (what a malicious checkpoint does): it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def plain_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": Payload(marker)})


def torch_pickle(marker: Path) -> bytes:
    """A torch.save zip archive (the .pth/.pt format) whose data.pkl carries the payload."""
    out = io.BytesIO()
    torch.save({"model": Payload(marker)}, out)
    return out.getvalue()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: unpickling without protection runs the code (in a throwaway subprocess)."""
    probe = tmp_path / "control"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(plain_pickle(probe))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(evil)!r}, 'rb').read())"], check=True)
    assert probe.read_text() == "code ran"


def model_dir_with(tmp_path: Path, weights: bytes) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    config = {"architecture": "seed-cnn", "classes": ["cat", "dog"], "preprocess": {"image_size": 64}}
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(weights)
    return model


@pytest.mark.parametrize("make", [plain_pickle, torch_pickle], ids=["pickle", "torch-zip"])
def test_load_model_dir_refuses_a_pickle(tmp_path: Path, marker: Path, make) -> None:
    model = model_dir_with(tmp_path, make(marker))
    with pytest.raises(ModelError) as err:
        load_model_dir(model)
    assert one_sentence(str(err.value), "model.safetensors"), str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["model-dir", "pth", "onnx"])
def test_predict_refuses_planted_pickles(tmp_path: Path, marker: Path, cat_photo: Path, where: str) -> None:
    if where == "model-dir":
        target = model_dir_with(tmp_path, torch_pickle(marker))
    else:
        target = tmp_path / f"weights.{where}"
        target.write_bytes(torch_pickle(marker))
    done = run_catdog("predict", "--model", str(target), str(cat_photo), timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    message = done.stderr.strip().removeprefix("error:").strip()
    assert "\n" not in message.replace("\n", " ").strip() and str(target.name) in message, message
    assert not marker.exists()


@pytest.mark.slow  # data preparation and a model build, ~20 s
def test_train_resume_refuses_a_planted_checkpoint(tmp_path: Path, marker: Path, samples_dir: Path) -> None:
    """checkpoint.pt is read with torch.load(weights_only=True): a pickle payload is refused, not run."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(torch_pickle(marker))
    data = tmp_path / "data"
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:4]:
            shutil.copy(photo, data / label)
    done = run_catdog(
        "train", str(data), "--out", str(out), "--model", "seed-cnn", "--epochs", "1", "--image-size", "64",
        "--resume", "--cache-dir", str(tmp_path / "cache"), "--workers", "0", timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "checkpoint.pt" in done.stderr
    assert not marker.exists()


def test_every_torch_load_is_weights_only() -> None:
    """No code path unpickles: every torch.load passes weights_only=True, and nothing calls pickle.load."""
    offenders = []
    for path in sorted((REPO / "src" / "catdog").rglob("*.py")):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):  # to the matching parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[match.start() : end + 1]
            if "weights_only=True" not in call:
                offenders.append(f"{path.relative_to(REPO)}: {call}")
        offenders += [f"{path.relative_to(REPO)}: pickle" for _ in re.finditer(r"\bpickle\.loads?\(", text)]
    assert not offenders, offenders
