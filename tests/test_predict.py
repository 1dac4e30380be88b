"""The built-in model out of the box, and `catdog predict` on the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.common import dev_validation, nonpet_pictures
from catdog.models.pretrained import create_pretrained, load_packaged_weights
from catdog.predict import Predictor, expand_inputs

from conftest import run_catdog


@pytest.fixture(scope="module")
def builtin() -> Predictor:
    return Predictor.load(None)


def _held_out_sample(dev_dir: Path, per_class: int = 200) -> tuple[list[str], list[str]]:
    """A fixed sample of dev photos from the validation side of catdog's split (the head never saw them)."""
    val = dev_validation(dev_dir)
    chosen = [item for label in ("cat", "dog") for item in [v for v in val if v[1] == label][:per_class]]
    return [path for path, _ in chosen], [label for _, label in chosen]


def test_builtin_model_is_accurate_on_400_held_out_dev_photos(builtin, dev_dir):
    paths, truth = _held_out_sample(dev_dir)
    assert len(paths) == 400
    predictions = list(builtin.predict_paths([str(p) for p in paths]))
    correct = sum(p.label == t for p, t in zip(predictions, truth))
    assert correct / 400 >= 0.95, f"{correct}/400 correct"


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_builtin_model_calls_non_pet_photos_neither(builtin):
    photos = nonpet_pictures()
    results = builtin.predict_batch([(name, _png(pixels)) for name, pixels in photos.items()], "filename")
    neither = [r.source for r in results if r.label == "neither"]
    assert len(neither) >= 0.8 * len(photos), f"only {neither} of {sorted(photos)} were called neither"
    for name in ("astronaut", "coffee", "rocket"):
        assert name in neither


def test_builtin_model_still_sees_a_real_cat_among_them(builtin):
    from skimage.data import chelsea  # scikit-image's photo of a cat (a test dependency)

    [result] = builtin.predict_batch([("chelsea.png", _png(chelsea()))], "filename")
    assert result.label == "cat" and result.confidence > 0.9


def test_packaged_weights_must_match_every_shape():
    model = create_pretrained("tf_efficientnet_lite0")
    import timm

    wrong = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    with pytest.raises(ValueError, match="do not fit|hold"):
        load_packaged_weights(wrong, "tf_efficientnet_lite0")
    assert model.num_classes == 1000


def test_expand_inputs_keeps_order_and_reports_unmatched(tmp_path, samples_dir):
    entries = expand_inputs(
        [str(samples_dir / "dog"), str(tmp_path / "nothing*.jpg"), str(samples_dir / "cat" / "cat.1.jpg")]
    )
    assert [isinstance(e, str) for e in entries].count(True) == 21
    assert entries[-1] == str(samples_dir / "cat" / "cat.1.jpg")
    assert entries[20].error == f"No file matches '{tmp_path / 'nothing*.jpg'}'."


def test_cli_predict_json_contract_and_bad_file_in_batch(tmp_path, cat_photo, dog_photo):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(cat_photo.read_bytes()[:500])
    result = run_catdog("predict", "--json", str(cat_photo), str(broken), str(dog_photo))
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert result.stdout == json.dumps(out, indent=2) + "\n"  # streamed element by element, same text
    assert [o["path"] for o in out] == [str(cat_photo), str(broken), str(dog_photo)]
    assert out[0]["label"] == "cat" and out[2]["label"] == "dog"
    assert set(out[0]["probabilities"]) == {"cat", "dog", "neither"}
    assert abs(sum(out[0]["probabilities"].values()) - 1) < 1e-4
    assert out[0]["confidence"] == max(out[0]["probabilities"].values())
    assert "corrupt" in out[1]["error"] and str(broken) in out[1]["error"] and "label" not in out[1]
    assert "Traceback" not in result.stderr


def test_cli_predict_csv_and_folder(samples_dir):
    result = run_catdog("predict", "--csv", str(samples_dir))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 40
    correct = sum(Path(r["path"]).parent.name == r["label"] for r in rows)
    assert correct >= 38


def test_cli_predict_missing_path_exits_non_zero_with_one_line():
    result = run_catdog("predict", "no/such/photo.jpg")
    assert result.returncode == 1
    assert "does not exist" in result.stdout and "Traceback" not in result.stderr


def test_cli_help_documents_defaults():
    result = run_catdog("predict", "--help")
    assert result.returncode == 0
    assert "--batch-size" in result.stdout and "default: 32" in result.stdout
