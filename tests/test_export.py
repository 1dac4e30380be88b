"""catdog export: fp32 parity against PyTorch on real photos, int8 parity, refusal when parity fails."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from catdog import export as export_module
from catdog.data import discover
from catdog.export import ExportError, check_chunks, check_files, check_images, export
from catdog.models import load_model_dir
from catdog.predict import Predictor
from catdog.preprocess import Preprocess

from conftest import REPO, fewest_correct, image_bytes, pinned_photos, run_catdog, run_catdog_in_process


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_int8_calibration_photos_are_not_the_check_photos(samples_dir: Path) -> None:
    pre, classes = Preprocess(), ["cat", "dog"]
    check, labels = check_images(samples_dir, pre, classes, 10)
    calibration, _ = check_images(samples_dir, pre, classes, 10, others=True)
    assert len(check) == len(calibration) == 10 and set(labels) == {0, 1}
    assert not any(np.array_equal(a, b) for a in check for b in calibration)


def test_check_chunks_stream_the_check_photos_and_skip_unreadable_ones(samples_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(samples_dir, folder)
    (folder / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    pre, classes = Preprocess(), ["cat", "dog"]
    whole, labels = check_images(folder, pre, classes, 100)
    chunks = list(check_chunks(folder, pre, classes, 100, chunk=3))
    assert all(len(batch) == len(chunk_labels) <= 3 for batch, chunk_labels in chunks)
    assert np.array_equal(np.concatenate([batch for batch, _ in chunks]), whole)
    assert [label for _, chunk_labels in chunks for label in chunk_labels] == labels
    assert len(labels) == sum(1 for p in samples_dir.rglob("*") if p.is_file())  # all but the broken file
    # Calibration photos are left out of a check that would otherwise take every photo of a small folder.
    calibration = [path for path, _ in check_files(folder, classes, 4, others=True)]
    checked = [path for path, _ in check_files(folder, classes, 100, exclude=calibration)]
    assert len(checked) == len(labels) + 1 - 4 and not set(checked) & set(calibration)


def test_fp32_file_matches_pytorch_on_real_photos(onnx_model_file: Path, trained_model_dir: Path, samples_dir: Path):
    module, config = load_model_dir(trained_model_dir)
    batch, _ = check_images(samples_dir, Preprocess.from_dict(config["preprocess"]), config["classes"], 40)
    with torch.inference_mode():
        ref_logits, ref_pet, ref_looks, ref_score = module(torch.from_numpy(batch))
    sess = ort.InferenceSession(str(onnx_model_file), providers=["CPUExecutionProvider"])
    names = ["logits", "pet_score", "looks_like", "looks_like_score"]
    logits, pet, looks_like, looks_like_score = sess.run(names, {"input": batch})
    assert np.abs(_probs(logits) - _probs(ref_logits.numpy())).max() <= 1e-4
    assert np.abs(pet - ref_pet.numpy()).max() <= 1e-4  # the open-set gate is inside the file
    assert (looks_like == ref_looks.numpy()).all()
    assert np.abs(looks_like_score - ref_score.numpy()).max() <= 1e-4  # what decides whether it is named
    check = json.loads(sess.get_modelmeta().custom_metadata_map["parity_check"])
    assert check["fp32_max_gap"] <= 1e-4 and check["n_check"] == 64


@pytest.mark.parametrize("pristine_after_blocks", [None, pytest.param(5, marks=pytest.mark.slow)])  # 5: ~35 s
def test_int8_keeps_the_gate_and_heads_in_fp32(
    pristine_after_blocks, samples_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The classifier layers and the gate's softmax and sum are not quantized; the pet score is not biased low.

    An 8-bit softmax rounds each ImageNet probability to a multiple of ~1/255: the small ones the
    pet score sums became 0, and int8 turned pets away as `neither` (most of its disagreements).
    With a pristine gate (a fine-tuned model's), the gate's nodes come before the model's last convolution.
    """
    import onnx

    from catdog.inference.onnx_export import export_onnx
    from catdog.models import build_model
    from catdog.models.builtin import load_builtin_gate
    from catdog.models.pretrained import pretrained_preprocess

    int8_path = tmp_path / "int8.onnx"
    if pristine_after_blocks is None:
        # A Lite0 with a cat/dog head and the built-in gate is what the session's fp32 export holds
        # (trained_model_dir): quantize that file rather than export the same graph once more (~10 s).
        fp32_path = request.getfixturevalue("onnx_model_file")
        config = json.loads((request.getfixturevalue("trained_model_dir") / "config.json").read_text())
        pre = Preprocess.from_dict(config["preprocess"])
    else:
        model = build_model("tf_efficientnet_lite0", 2, gate=True).eval()
        model.add_open_set_gate(load_builtin_gate(model.backbone.num_features))
        model.add_pristine_gate(pristine_after_blocks)
        pre = pretrained_preprocess(model.backbone)
        config = {"architecture": "tf_efficientnet_lite0", "classes": ["cat", "dog"], "preprocess": pre.to_dict()}
        fp32_path = tmp_path / "fp32.onnx"
        export_onnx(model, config, fp32_path)
    calibration, _ = check_images(samples_dir, pre, ["cat", "dog"], 8, others=True)
    export_module._quantize(fp32_path, int8_path, calibration, tmp_path, config)

    proto = onnx.load(str(int8_path))
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert json.loads(metadata["classes"]) == ["cat", "dog"]  # the file describes itself, as the fp32 one does
    assert Preprocess.from_dict(json.loads(metadata["preprocess"])) == pre
    assert "(pixel / 255 - mean) / std" in proto.doc_string  # and says in words what its input holds
    nodes = proto.graph.node
    producer = {out: node.op_type for node in nodes for out in node.output}
    consumers = {name: [n.op_type for n in nodes if name in n.input] for node in nodes for name in node.output}
    head_ops = [node for node in nodes if node.op_type in ("Gemm", "Softmax", "Gather", "ReduceSum")]
    assert {node.op_type for node in head_ops} == {"Gemm", "Softmax", "Gather", "ReduceSum"}
    for node in head_ops:
        assert not any(producer.get(name) == "DequantizeLinear" for name in node.input), node.name
        assert not any("QuantizeLinear" in consumers[name] for name in node.output), node.name
    assert sum(node.op_type == "QuantizeLinear" for node in nodes) > 20  # the backbone itself is quantized
    assert "looks_like_score" in [output.name for output in proto.graph.output]  # int8 names only what fp32 does

    batch, _ = check_images(samples_dir, pre, ["cat", "dog"], 16)
    fp32_pet, int8_pet = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["pet_score"], {"input": batch})[0]
        for path in (fp32_path, int8_path)
    )
    assert np.abs(np.log(int8_pet / fp32_pet)).mean() < 0.1
    off_grid = np.abs(int8_pet * 255 - np.round(int8_pet * 255)) > 1e-3
    assert off_grid.mean() >= 0.6  # not on an 8-bit grid (a few saturate at exactly 1.0)


def test_int8_accuracy_counts_only_the_photos_of_the_models_classes(
    onnx_model_file: Path, trained_model_dir: Path, samples_dir: Path, data_root: Path
) -> None:
    """A `neither` folder's photos have no class to be right about: they once counted as errors, so a check
    folder with non-pets reported fp32 and int8 alike at 79 % (their share of the folder)."""
    from catdog.export import int8_fidelity

    _, config = load_model_dir(trained_model_dir)
    pre = Preprocess.from_dict(config["preprocess"])
    pets, pet_labels = check_images(samples_dir, pre, config["classes"], 40)
    others, other_labels = check_images(data_root / "neither", pre, config["classes"], 8)  # subject folders
    assert other_labels == [-1] * 8
    chunks = [(pets, pet_labels), (others, other_labels)]
    fidelity = int8_fidelity(onnx_model_file, onnx_model_file, chunks, config)  # the same file twice: agreement 1
    assert fidelity["n"] == 48 and fidelity["agreement"] == 1.0
    truth = [config["classes"][y] for y in pet_labels]
    right = sum(a == t for a, t in zip(fidelity["labels_fp32"], truth))
    assert fidelity["accuracy_fp32"] == fidelity["accuracy_int8"] == right / 40  # shares, of the 40 pets


def test_refuses_to_write_when_parity_fails(samples_dir: Path, tmp_path: Path, monkeypatch):
    from catdog.models import build_model, save_model_dir

    # A small from-scratch cat/dog net: the refusal is the same for every model, and its export takes a
    # second or two where a Lite0's takes ~10 s.
    pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": pre.to_dict(), "gate": None}
    save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, tmp_path / "model")
    monkeypatch.setattr(export_module, "FP32_MAX_GAP", -1.0)  # a limit no gap meets: the check fails
    out = tmp_path / "out" / "refused.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch by .* nothing was written"):
        export(tmp_path / "model", out, check_dir=samples_dir, n_check=8)
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.slow  # keeps the default suite near 10 minutes on 2 cores
def test_int8_export_refuses_a_model_that_disagrees_with_fp32(
    trained_model_dir: Path, dev_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """The int8 refusal: calibrated on black frames, int8 saturates on real photos; nothing is written. Before
    the minutes of quantizing and checking, stderr says so (they passed in silence).

    The check folder alternates real photos and black frames; the calibration photos come from its odd
    positions (the black frames) and the agreement check takes the first 200 of the rest (most of them real).
    """
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(export_module.INT8_FLOOR_PHOTOS):
        label = "cat" if i % 2 == 0 else "dog"
        shutil.copy(dev_dir / f"{label}.{2000 + i}.jpg", folder / f"{label}.{2 * i:03d}.jpg")
        Image.new("RGB", (200, 200)).save(folder / f"{label}.{2 * i + 1:03d}.jpg")
    out = tmp_path / "out" / "refused.onnx"
    with pytest.raises(ExportError, match=r"int8 model agrees with fp32 on .* nothing was written") as refused:
        export(trained_model_dir, out, int8=True, check_dir=folder, n_check=export_module.INT8_FLOOR_PHOTOS)
    assert "of 200 photos" in str(refused.value)
    said = "Quantizing to int8 on 64 photos; checking it against fp32 on up to 200 photos.\n"
    assert capsys.readouterr().err.endswith(said)
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.slow  # ~60 s on 2 cores: the quantization runs before the photos are read
def test_int8_is_refused_when_unreadable_photos_leave_fewer_than_the_floor(
    trained_model_dir: Path, dev_dir: Path, tmp_path: Path
):
    """264 files pass the count made before any work (64 to calibrate, 200 to check), but unreadable ones are
    left out when read: 10 truncated photos among the 200 left int8 checked on 190, where a changed label is
    already below the 99.5 % floor and none does not show it, and the export was written."""
    folder = tmp_path / "photos"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for photo in sorted(dev_dir.glob(f"{label}.3*.jpg"))[:127]:
            (folder / label / photo.name).hardlink_to(photo)
    # Last in the folder's order: among the photos that check int8, none of those that calibrate it.
    for i, photo in enumerate(sorted(dev_dir.glob("dog.4*.jpg"))[:10]):
        (folder / "dog" / f"zz-truncated-{i}.jpg").write_bytes(photo.read_bytes()[:300])
    out = tmp_path / "out" / "int8.onnx"
    with pytest.raises(ExportError, match=r"^Only 190 of the photos chosen to check int8 could be read, .* nothing"):
        export(trained_model_dir, out, int8=True, check_dir=folder)
    assert not out.exists()


def test_cli_errors(trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Refusals: in this process (a subprocess each imported torch for a sentence).
    no_data = run_catdog_in_process("export", str(trained_model_dir), "--out", str(tmp_path / "m.onnx"))
    assert no_data.returncode == 2 and "--check-data" in no_data.stderr
    wrong_format = run_catdog_in_process("export", str(trained_model_dir), "--format", "tflite")
    assert wrong_format.returncode == 2 and "tflite" in wrong_format.stderr
    missing = run_catdog_in_process("export", str(tmp_path / "nowhere"), "--check-data", str(tmp_path))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    # A check folder that is missing or holds no photo: one sentence, not "Exporting to ONNX; checking it against
    # PyTorch on up to 300 photos of 'nowhere' first." before it (the model has loaded by then).
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "cat.1.jpg").write_text("not a photo")
    for folder, said in (("nowhere", "does not exist"), ("notes", "holds no readable photo")):
        refused = run_catdog_in_process(
            "export", str(trained_model_dir), "--out", str(tmp_path / "m.onnx"), "--check-data", str(tmp_path / folder)
        )
        assert refused.returncode == 2 and refused.stderr.startswith("error: ") and said in refused.stderr, refused
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "m.onnx").exists()
    # A name without .onnx was written (over any file of that name: --out notes.txt), and catdog predict then
    # refused it as "not a model directory"; it is refused before any work, and the file is kept.
    (tmp_path / "notes.txt").write_text("mine")
    for name in ("notes.txt", "my-model"):
        unnamed = run_catdog_in_process("export", str(trained_model_dir), "--out", str(tmp_path / name))
        assert unnamed.returncode == 2, unnamed.stderr
        assert (
            unnamed.stderr.strip()
            == f"error: --out '{tmp_path / name}' must end in .onnx: catdog reads a model file by that name."
        )
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "my-model").exists()
    # `--out -` is standard output to most tools: it was told "must end in .onnx", as if '-' were a file name.
    to_stdout = run_catdog_in_process("export", str(trained_model_dir), "--out", "-")
    assert to_stdout.returncode == 2 and "writes a file, not standard output" in to_stdout.stderr, to_stdout.stderr
    # The phone app's `--out -` was written to a folder named '-'.
    monkeypatch.chdir(tmp_path)
    web = run_catdog_in_process("export", str(trained_model_dir), "--format", "web", "--out", "-")
    assert web.returncode == 2 and "writes a folder, not standard output" in web.stderr, web.stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.slow
def test_int8_export_of_the_builtin_model_meets_the_floor(dev_dir: Path, samples_dir: Path, tmp_path: Path) -> None:
    """The built-in model quantizes within the export's floors (measured: 99.6 % agreement and a
    0.15-point drop on 2,000 dev photos, `python -m benchmarks int8`), and the file works on its own."""
    out = tmp_path / "int8.onnx"
    done = run_catdog("export", "--int8", "--out", str(out), "--check-data", str(dev_dir), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n_check"] == 300 and report["n_check_int8"] == 2000  # int8 is measured on more photos
    assert report["agreement"] >= 0.995 and report["accuracy_fp32"] - report["accuracy_int8"] <= 0.003 + 1e-9
    # Independently, through the Predictor, on photos neither the head nor the export's check used: the
    # 1,000 pinned dev test photos (the check draws from the whole folder, mostly the head's training
    # photos) and the full-size samples. At 99.5 % agreement, the binomial floor on 1,000 photos is 98.9 %.
    held_out, _ = pinned_photos(dev_dir)
    photos = held_out + sorted(map(str, samples_dir.rglob("*.jpg")))
    fp32 = [p.label for p in Predictor.load(None).predict_paths(photos)]
    int8 = [p.label for p in Predictor.load(out).predict_paths(photos)]
    agree = sum(a == b for a, b in zip(fp32, int8))
    assert agree >= fewest_correct(len(photos), export_module.INT8_MIN_AGREEMENT), f"{agree}/{len(photos)} agree"
    # 8-bit backbone weights; the 1280x1000 ImageNet head (5.1 MB) stays fp32 with the gate.
    assert out.stat().st_size < 0.6 * 18_000_000


def test_int8_from_a_folder_too_small_to_show_the_floor_is_refused_before_any_work(samples_dir: Path, tmp_path: Path):
    """Fewer than 200 check photos cannot show 99.5 % agreement: one changed label is below it, and none shows
    little (a head fitted on 68 photos agreed with fp32 on all 9 photos its 73-photo folder left to check, and on
    98.5 % of 200 other photos). A small folder is refused in one sentence that says how many photos it needs."""
    folder = tmp_path / "photos"  # 73 photos, a small user dataset: 32 calibrate int8, 41 would check it
    shutil.copytree(samples_dir, folder)
    for i in range(33):
        shutil.copy(samples_dir / "cat" / sorted(p.name for p in (samples_dir / "cat").iterdir())[i % 20],
                    folder / "cat" / f"extra-{i}.jpg")  # fmt: skip
    out = tmp_path / "out" / "int8.onnx"
    done = run_catdog_in_process("export", "--int8", "--out", str(out), "--check-data", str(folder))
    assert done.returncode == 2 and not out.parent.exists()
    said = (
        "error: int8 must agree with fp32 on 99.5% of labels, which fewer than 200 check photos cannot show (on "
        f"fewer, one changed label is already below it); '{folder}' has 73 photos, 32 to calibrate int8 and 41 "
        "to check it: give --check-data at least 232 photos like those the model will see (they need no labels: a "
        "subfolder of any name will do), or export fp32 without --int8."
    )
    assert done.stderr.strip().splitlines() == [said]
    asked = run_catdog_in_process("export", "--int8", "--out", str(out), "--check-data", str(folder),
                                  "--check-images", "199")  # fmt: skip
    assert asked.returncode == 2 and not out.parent.exists()
    assert asked.stderr.strip().startswith("error: --check-images 199 is too few for --int8: int8 must agree with")


def test_int8_from_a_folder_too_small_is_refused_before_the_model_loads(samples_dir: Path, tmp_path: Path):
    """The refusal above came after torch and the model had loaded (14 s on 2 cores, for a sentence about the
    photos): the photos are now counted from the model's record first. A model whose weights cannot be read
    shows the order: the refusal about the photos comes, not the one about the weights."""
    model = tmp_path / "my-model"
    model.mkdir()
    pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": pre.to_dict(), "gate": None}
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"not weights: a download cut short")
    out = tmp_path / "out" / "int8.onnx"
    refused = run_catdog_in_process("export", str(model), "--int8", "--out", str(out), "--check-data", str(samples_dir))
    assert refused.returncode == 2 and not out.parent.exists()
    assert refused.stderr.startswith("error: int8 must agree with fp32 on 99.5% of labels"), refused.stderr
    fp32 = run_catdog_in_process("export", str(model), "--out", str(out), "--check-data", str(samples_dir))
    assert fp32.returncode == 2 and "is not a valid safetensors file" in fp32.stderr, fp32.stderr  # unreadable


@pytest.mark.slow  # ~70 s on 2 cores
def test_int8_is_checked_on_unlabelled_photos(dev_dir: Path, tmp_path: Path) -> None:
    """What the refusal above offers: the agreement with fp32 needs no labels, so 264 photos in a subfolder of any
    name check int8 (200 of them, beside the 64 it is calibrated on), with no accuracy to report."""
    folder = tmp_path / "phone" / "unsorted"
    folder.mkdir(parents=True)
    for i, photo in enumerate(sorted(dev_dir.iterdir())[5000:10280:20]):  # cats and dogs
        (folder / f"IMG_{i:04d}.jpg").hardlink_to(photo)
    out = tmp_path / "int8.onnx"
    done = run_catdog("export", "--int8", "--out", str(out), "--check-data", str(folder.parent), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n_check_int8"] == 200 and report["agreement"] >= 0.995
    assert report["accuracy_fp32"] is None and report["accuracy_int8"] is None


@pytest.mark.slow  # ~50 s on 2 cores: keeps the default suite near 10 minutes
def test_the_documented_script_answers_as_catdog_predict(
    onnx_model_file: Path, samples_dir: Path, data_root: Path, tmp_path
):
    """docs/predict-and-serve.md's "Using the file without catdog": run as written, on the samples and on
    non-pets, it gives `catdog predict`'s labels and probabilities. (A script a user wrote from the docs before
    it existed disagreed on 2 of 66 photos: near the gate's threshold, a pixel of preprocessing decides.)"""
    import subprocess
    import sys

    text = (REPO / "docs" / "predict-and-serve.md").read_text()
    script = text.split("<!-- onnx-alone: tests/test_export.py runs this block -->\n```python\n")[1].split("```")[0]
    (tmp_path / "onnx_alone.py").write_text(script)
    photos = sorted(map(str, samples_dir.rglob("*.jpg")))
    photos += [
        str(p)
        for subject in ("horse", "sheep", "flower")
        for p in sorted((data_root / "neither" / subject).iterdir())[:4]
    ]
    photos += _photos_in_other_modes(sorted(samples_dir.rglob("*.jpg"))[::13], tmp_path / "modes")
    alone = subprocess.run(
        [sys.executable, str(tmp_path / "onnx_alone.py"), str(onnx_model_file), *photos],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    catdog = run_catdog("predict", "--json", "--model", str(onnx_model_file), *photos)
    assert catdog.returncode == 0, catdog.stderr
    expected, got = json.loads(catdog.stdout), json.loads(alone.stdout)
    assert [a["path"] for a in got] == [e["path"] for e in expected] == photos
    assert [a["label"] for a in got] == [e["label"] for e in expected], [
        (a, e) for a, e in zip(got, expected) if a["label"] != e["label"]
    ]
    assert {e["label"] for e in expected} == {"cat", "dog", "neither"}  # every kind of answer is compared
    for a, e in zip(got, expected):
        assert a["probabilities"].keys() == e["probabilities"].keys()
        assert max(abs(a["probabilities"][k] - v) for k, v in e["probabilities"].items()) < 1e-4, (a, e)


def _photos_in_other_modes(sources: list[Path], folder: Path) -> list[str]:
    """Real photos as the files users have beside JPEGs: a cut-out with transparency (RGBA and LA PNG, a GIF with a
    transparent colour), 16-bit greyscale PNG, CMYK JPEG, and a JPEG stored on its side with an EXIF orientation.

    The documented script once made RGB of them with Pillow's plain convert: transparent pixels kept the colour
    under them (black here) where catdog puts them on white, and 16-bit values were clipped to 255 (a white
    frame): a cat answered `neither` with P(neither) 0.9995 where catdog said cat at 0.99995.
    """
    from PIL import Image, ImageDraw

    folder.mkdir()
    made = []
    for i, source in enumerate(sources):
        rgb = Image.open(source).convert("RGB")
        width, height = rgb.size
        mask = Image.new("L", rgb.size, 0)
        ImageDraw.Draw(mask).ellipse((width * 0.15, height * 0.1, width * 0.85, height * 0.9), fill=255)
        cutout = np.asarray(rgb.convert("RGBA")).copy()
        cutout[..., 3] = np.asarray(mask)
        cutout[cutout[..., 3] == 0, :3] = 0  # what many editors leave under transparent pixels
        Image.fromarray(cutout, "RGBA").save(folder / f"{i}-cutout.png")
        grey = rgb.convert("L")
        grey_cutout = grey.copy()
        grey_cutout.putalpha(mask)
        grey_cutout.save(folder / f"{i}-cutout-la.png")
        palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
        indices = np.asarray(palette).copy()
        indices[np.asarray(mask) == 0] = 255
        gif = Image.fromarray(indices, "P")
        gif.putpalette(palette.getpalette())
        gif.save(folder / f"{i}-cutout.gif", transparency=255)
        Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(folder / f"{i}-grey16.png")
        rgb.convert("CMYK").save(folder / f"{i}-cmyk.jpg", quality=95)
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned 90° clockwise: the pixels are stored turned the other way
        rgb.transpose(Image.Transpose.ROTATE_90).save(folder / f"{i}-exif.jpg", exif=exif, quality=95)
        made += [str(path) for path in sorted(folder.glob(f"{i}-*"))]
    return made


@pytest.mark.parametrize(
    ("photos", "calibrated", "checked"), [(73, 32, 41), (231, 32, 199), (240, 40, 200), (264, 64, 200), (600, 64, 536)]
)
def test_int8_calibrates_on_fewer_photos_in_a_small_folder(tmp_path: Path, photos: int, calibrated: int, checked: int):
    """64 photos calibrated int8 and the rest checked it, so a folder of 240 (a small user dataset) was refused for
    leaving 176 to check. Under 264 photos int8 now calibrates on what 200 check photos leave, down to 32; never
    on a photo that checks it. The folder's names are all that is read: empty files do."""
    for i in range(photos):
        (tmp_path / f"{'cat' if i % 2 else 'dog'}.{i}.jpg").touch()
    calibration, check = export_module.int8_split(discover(tmp_path).files, ["cat", "dog"])
    assert (len(calibration), len(check)) == (calibrated, checked)
    assert not {path for path, _ in calibration} & {path for path, _ in check}


@pytest.mark.parametrize("dated", [False, True], ids=["labelled", "year-folders"])
def test_an_int8_export_lists_the_check_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dated: bool
) -> None:
    """The folder was listed three times for int8's two parts (4,000 photos: 3x the time of one listing), and then
    once more for the fp32 check. An export lists it once now, and still checks fp32 and int8 on their photos.
    The check needs no labels, so a phone's photos sorted into year folders (refused as classes) are read too."""
    from catdog.models import build_model, save_model_dir

    pre = Preprocess(image_size=32, crop_pct=1.0, interpolation="bilinear")
    model = tmp_path / "catnet"
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": pre.to_dict(), "gate": None}
    save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, model)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(export_module.SMALLEST_INT8_FOLDER):
        name = f"{2019 + i % 2}/IMG_{i}.jpg" if dated else f"{'cat' if i % 2 else 'dog'}.{i}.jpg"
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(image_bytes(size=(32 + i % 7, 32), quality=80))
    listed, scandir = [], os.scandir
    monkeypatch.setattr(os, "scandir", lambda path=".": (listed.append(path), scandir(path))[1])  # rmtree: an fd
    report = export(model, tmp_path / "int8.onnx", int8=True, check_dir=folder)
    assert [path for path in listed if not isinstance(path, int) and Path(path) == folder] == [folder], listed
    assert (report.n_check, report.n_calibration, report.n_check_int8) == (
        export_module.SMALLEST_INT8_FOLDER,  # under FP32_CHECK_IMAGES: all of them
        export_module.FEWEST_CALIBRATION_IMAGES,
        export_module.INT8_FLOOR_PHOTOS,
    )


@pytest.mark.slow  # an int8 export of Lite0: about a minute on 2 cores
def test_int8_from_a_240_photo_folder_says_what_it_calibrated_on_and_how_narrow_the_check_is(
    dev_dir: Path, tmp_path: Path
) -> None:
    """A folder of 240 photos was refused (64 to calibrate left 176 to check). It now calibrates on 40 and
    checks on 200, and the line says so, and that 2 changed labels would have failed a check on so few. The
    count is of the photos read: one of the 40 is broken here, and the line once said 40 all the same."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for label in ("cat", "dog"):
        for i in range(3000, 3120):
            (folder / f"{label}.{i}.jpg").hardlink_to(dev_dir / f"{label}.{i}.jpg")
    calibration, _ = export_module.int8_split(discover(folder).files, ["cat", "dog"])
    broken = calibration[0][0]
    broken.unlink()
    broken.write_bytes(b"not a photo")
    out = tmp_path / "int8.onnx"
    done = run_catdog_in_process("export", "--int8", "--out", str(out), "--check-data", str(folder))
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"Wrote {re.escape(str(out))}: max \|Δprobability\| vs PyTorch \S+ on 239 photos; int8, calibrated on 39 "
        r"photos, agrees with fp32 on \S+% of 200 others, accuracy \S+ \(fp32 \S+\)\. That check rests on few "
        r"photos: 2 changed labels, or 1 more mistake than fp32, would have failed it; 2,000 photos in --check-data "
        r"make a firmer one\.",
        done.stdout.strip(),
    ), done.stdout


def test_a_narrow_int8_check_says_how_few_changes_would_have_failed_it() -> None:
    """On 200 labelled photos one label int8 gets wrong and fp32 right is a 0.5-point drop, over the 0.3 allowed:
    the line said only "2 changed labels would have failed it", as if one could not (an export of 240 dev photos
    passed with 1 changed label, which happened to make int8 right). Both floors are said where both apply."""
    from catdog.cli.models import _checks

    report = {"fp32_max_gap": 1e-6, "n_check": 240, "int8": True, "n_calibration": 40, "agreement": 0.995,
              "n_check_int8": 200, "accuracy_fp32": 0.98, "accuracy_int8": 0.985}  # fmt: skip
    assert _checks(report).endswith(
        ". That check rests on few photos: 2 changed labels, or 1 more mistake than fp32, would have failed it; "
        "2,000 photos in --check-data make a firmer one"
    )
    assert "4 changed labels, or 2 more mistakes than fp32, would" in _checks(report | {"n_check_int8": 600})
    unlabelled = report | {"accuracy_fp32": None, "accuracy_int8": None}  # no accuracy, no accuracy floor
    assert "few photos: 2 changed labels would have failed it; " in _checks(unlabelled)
    assert "rests on few" not in _checks(report | {"n_check_int8": 2000})


def test_an_int8_check_on_one_photo_counts_it_as_one() -> None:
    """Found reviewing the "1 files" fix: export's line still said "of 1 others" and "1 changed labels"."""
    from catdog.cli.models import _checks

    report = {"fp32_max_gap": 1e-6, "n_check": 1, "int8": True, "n_calibration": 1, "agreement": 1.0,
              "n_check_int8": 1, "accuracy_fp32": None, "accuracy_int8": None}  # fmt: skip
    line = _checks(report)
    assert "on 1 photo;" in line and "calibrated on 1 photo," in line and "of 1 other." in line, line
    assert "1 changed label would" in line, line


def test_check_photos_in_folders_named_like_dates_are_read_without_labels(tmp_path: Path) -> None:
    """int8's agreement check needs no labels (docs: photos "in a subfolder of any name"), but a Pictures/ of
    2019/ and 2020/, a phone's photos sorted by year, was refused as folders named like dates, which only a
    command that needs classes must refuse. Its photos are check photos without a label (-1)."""
    for name in ("2019/IMG_1.jpg", "2020/IMG_2.jpg", "2020/IMG_3.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    assert [label for _, label in check_files(tmp_path, ["cat", "dog"], 10)] == [-1, -1, -1]
