"""Grad-CAM: the heat sits on the cat, not on the plain background around it."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog.errors import CatdogError
from catdog.explain import explain, explain_png
from catdog.predict import Predictor

from conftest import run_catdog, run_catdog_in_process

CANVAS = 512


@pytest.fixture(scope="module")
def cat_on_plain_background(cat_photo: Path) -> bytes:
    """A real cat photo pasted on the left half of a plain grey canvas."""
    canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
    cat = Image.open(cat_photo).convert("RGB")
    cat.thumbnail((CANVAS // 2, CANVAS // 2))
    canvas.paste(cat, (0, (CANVAS - cat.height) // 2))
    out = io.BytesIO()
    canvas.save(out, "PNG")
    return out.getvalue()


def test_heat_is_on_the_cat_not_the_background(trained_model_dir: Path, cat_on_plain_background: bytes) -> None:
    result = explain(trained_model_dir, cat_on_plain_background)
    assert result.label == "cat" and result.explained == "cat"
    size = result.heat.shape[0]
    # The model's view is the canvas scaled to resize_size and centre-cropped to image_size.
    predictor = Predictor.load(trained_model_dir, backend="torch")
    scale = predictor.pre.resize_size / CANVAS
    offset = (predictor.pre.resize_size - size) / 2
    edge = int(CANVAS // 2 * scale - offset)
    cat_region = result.heat[:, : edge - 4]
    background = result.heat[:, edge + 16 :]
    assert cat_region.mean() > 2 * background.mean()
    assert result.heat.max() == pytest.approx(1.0) and result.heat.min() >= 0


def test_explain_png_for_a_predictor_and_a_chosen_class(trained_model_dir: Path, cat_photo: Path) -> None:
    predictor = Predictor.load(trained_model_dir, backend="torch")
    png, explained = explain_png(predictor, cat_photo.read_bytes(), class_name="dog")
    assert explained == "dog"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (448, 448)
    cat_heat = explain(predictor, cat_photo.read_bytes(), class_name="cat").heat
    dog_heat = explain(predictor, cat_photo.read_bytes(), class_name="dog").heat
    assert not np.allclose(cat_heat, dog_heat)  # the class really steers the map
    # The class as its folder is named ("Dogs/") is the class it became; --class "Blümen rot" was refused.
    assert np.allclose(explain(predictor, cat_photo.read_bytes(), class_name="Dogs").heat, dog_heat)
    with pytest.raises(CatdogError, match=r"class 'horses' is not one of the model's classes \(cat, dog\)"):
        explain(predictor, cat_photo.read_bytes(), class_name="horses")


@pytest.mark.parametrize(
    "model", [None, "builtin-large"]
)  # the backbone itself, and a pristine copy beside a fine-tune
def test_a_neither_answer_shows_where_it_sees_what_it_looks_like(model: str | None, data_root: Path) -> None:
    """A horse answered `neither` "looks like: sorrel": its heat map is the sorrel's, on the backbone the gate reads,
    where it was the cat/dog head's likelier class ("dog"), which no card names."""
    horse = (data_root / "neither" / "horse" / "inet-n02389026_sorrel.JPEG").read_bytes()
    result = explain(model, horse)
    assert result.label == "neither" and result.explained == "sorrel"
    assert result.heat.max() == pytest.approx(1.0)
    head_class = max(("cat", "dog"), key=lambda c: result.probabilities[c])
    assert not np.allclose(result.heat, explain(model, horse, class_name=head_class).heat)  # not the head's map
    # The horse fills the top two thirds of the photo, grass the rest: the sorrel is seen in the horse.
    rows = result.heat.shape[0]
    assert result.heat[: rows // 2].mean() > 2 * result.heat[-rows // 4 :].mean()


def test_a_neither_answer_too_weak_to_name_shows_no_name_and_not_the_heads_class(data_root: Path) -> None:
    """A piebald horse is answered `neither` with no class named (its top non-pet class, plow, is too weak):
    its heat map is still that class's, not the cat/dog head's likelier class, and it names neither."""
    piebald = (data_root / "neither" / "horse" / "popanim-horse_65.png").read_bytes()
    result = explain(None, piebald)
    assert result.label == "neither" and result.explained == "no cat or dog", result.explained
    head_class = max(("cat", "dog"), key=lambda c: result.probabilities[c])
    assert not np.allclose(result.heat, explain(None, piebald, class_name=head_class).heat)


def test_cli_writes_the_overlay_and_refuses_bad_input(
    trained_model_dir: Path, onnx_model_file: Path, cat_photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "heat.png"  # the first run as a user starts it; the others in this process (seconds each)
    done = run_catdog("explain", str(trained_model_dir), str(cat_photo), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert Image.open(out).format == "PNG"
    shares = r"cat \d+\.\d%, dog \d+\.\d%, neither \d+\.\d%"  # percentages, as predict and the page show them
    said = rf"{re.escape(str(cat_photo))}: cat \({shares}\); heat map for 'cat' written to {re.escape(str(out))}"
    assert re.fullmatch(said, done.stdout.strip()), done.stdout
    assert sum(map(float, re.findall(r"(\d+\.\d)%", done.stdout))) == pytest.approx(100.0)  # as the page's add up
    onnx_only = run_catdog_in_process("explain", str(onnx_model_file), str(cat_photo), "--out", str(tmp_path / "x.png"))
    assert onnx_only.returncode == 2 and "model directory" in onnx_only.stderr
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    bad = run_catdog_in_process("explain", str(trained_model_dir), str(broken), "--out", str(tmp_path / "y.png"))
    assert bad.returncode == 2 and "broken.jpg" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()

    as_jpeg = run_catdog_in_process("explain", str(trained_model_dir), str(cat_photo), "-o", str(tmp_path / "heat.jpg"))
    assert as_jpeg.returncode == 0 and Image.open(tmp_path / "heat.jpg").format == "JPEG"  # the format --out names
    photo = tmp_path / "mine.jpg"
    photo.write_bytes(cat_photo.read_bytes())
    onto_itself = run_catdog_in_process("explain", str(trained_model_dir), str(photo), "--out", str(photo))
    assert onto_itself.returncode == 2 and "the photo itself" in onto_itself.stderr
    assert photo.read_bytes() == cat_photo.read_bytes()  # it once became the heat map
    text = run_catdog_in_process("explain", str(trained_model_dir), str(cat_photo), "--out", str(tmp_path / "heat.txt"))
    assert text.returncode == 2 and ".png, .jpg or .webp" in text.stderr and not (tmp_path / "heat.txt").exists()


def test_explains_percentages_add_up_to_100_as_the_pages_do() -> None:
    """explain rounded each percentage on its own: thirds read "33.3%, 33.3%, 33.3%" (99.9 in all), where the page
    and the app (largest remainder, shares.js) show 33.4 for the largest remainder."""
    from catdog.cli.output import percents

    assert percents({"cat": 0.33335, "dog": 0.33332, "neither": 0.33333}) == "cat 33.4%, dog 33.3%, neither 33.3%"
    assert percents({"cat": 0.9994, "dog": 0.0003, "neither": 0.0003}) == "cat 100.0%, dog 0.0%, neither 0.0%"


def test_a_model_directory_named_like_an_onnx_file_is_explained(
    trained_model_dir: Path, cat_photo: Path, tmp_path: Path
) -> None:
    """predict reads a folder called `cats.onnx` as the model directory it is; explain refused it as "not an .onnx
    file", and `catdog serve` offered it no heat maps."""
    model = tmp_path / "cats.onnx"
    shutil.copytree(trained_model_dir, model)
    done = run_catdog_in_process("explain", str(model), str(cat_photo), "--out", str(tmp_path / "heat.png"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "heat.png").format == "PNG"
