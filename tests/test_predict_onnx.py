"""Prediction through ONNX Runtime: the .onnx file alone, the cached export, TTA, threshold, torchrun sharding."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from catdog.predict import Predictor
from catdog.sharding import local_share_of_cores

from conftest import REPO, run_catdog_in_process


def _by_path(output: str) -> dict[str, dict]:
    return {Path(p["path"]).name: p for p in json.loads(output)}


def test_onnx_file_alone_predicts_like_the_model_directory(
    onnx_model_file: Path, trained_model_dir: Path, samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = tmp_path / "only-this.onnx"  # nothing beside it: no config.json, no weights
    shutil.copy(onnx_model_file, alone)
    # In this process, as the CLI runs them: a subprocess each would start Python (and import torch) again.
    via_onnx = run_catdog_in_process("predict", "--model", str(alone), "--json", str(samples_dir))
    monkeypatch.setenv("CATDOG_BACKEND", "torch")
    via_torch = run_catdog_in_process("predict", "--model", str(trained_model_dir), "--json", str(samples_dir))
    assert via_onnx.returncode == 0, via_onnx.stderr
    assert via_torch.returncode == 0, via_torch.stderr
    onnx_out, torch_out = _by_path(via_onnx.stdout), _by_path(via_torch.stdout)
    assert len(onnx_out) == 40 and onnx_out.keys() == torch_out.keys()
    for name, expected in torch_out.items():
        got = onnx_out[name]
        assert got["label"] == expected["label"], name
        for c in ("cat", "dog"):
            assert abs(got["probabilities"][c] - expected["probabilities"][c]) <= 1e-4, name
    # The fitted head recognises the samples: the file really carries the trained weights.
    correct = sum(p["label"] == Path(name).name.split(".")[0] for name, p in onnx_out.items())
    assert correct >= 36


def test_a_file_exported_before_looks_like_score_names_the_class_as_it_did(
    onnx_model_file: Path, data_root: Path, tmp_path: Path
) -> None:
    """A piebald horse's top non-pet class, plow (0.004), is not named by a file with `looks_like_score`; a file
    exported before that output (the same graph without it) still answers, and names the class as it did."""
    import onnx

    before = tmp_path / "before.onnx"
    proto = onnx.load(str(onnx_model_file))
    kept = [output for output in proto.graph.output if output.name != "looks_like_score"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    onnx.save(proto, str(before))
    piebald = data_root / "neither" / "horse" / "popanim-horse_65.png"
    answers = {}
    for model in (onnx_model_file, before):
        done = run_catdog_in_process("predict", "--model", str(model), "--json", str(piebald))
        assert done.returncode == 0, done.stderr
        answers[model.name] = json.loads(done.stdout)[0]
    assert answers[onnx_model_file.name]["label"] == answers["before.onnx"]["label"] == "neither", answers
    assert "looks_like" not in answers[onnx_model_file.name], answers
    assert answers["before.onnx"]["looks_like"] == "plow", answers


def test_metadata_and_dynamic_batch(onnx_model_file: Path, trained_model_dir: Path) -> None:
    sess = ort.InferenceSession(str(onnx_model_file), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    config = json.loads((trained_model_dir / "config.json").read_text())
    assert json.loads(meta["classes"]) == config["classes"]
    assert json.loads(meta["preprocess"]) == config["preprocess"]
    assert json.loads(meta["temperature"]) == config["temperature"]
    assert json.loads(meta["gate"]) == config["gate"]
    assert json.loads(meta["catdog_version"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "pet_score", "looks_like", "looks_like_score", "features"]
    for n in (1, 7, 32):
        logits, pet = sess.run(["logits", "pet_score"], {"input": np.zeros((n, 3, 224, 224), np.float32)})
        assert logits.shape == (n, 2) and pet.shape == (n,)


def test_the_docs_name_the_files_onnx_versions_and_batches(onnx_model_file: Path, samples_dir: Path) -> None:
    """docs/predict-and-serve.md states the IR version and opset, from which the oldest ONNX Runtime that loads
    the file follows (1.17 refuses IR 10): an exporter that writes newer ones must change the docs too."""
    import re

    import onnx

    from catdog.export import check_images
    from catdog.preprocess import Preprocess

    proto = onnx.load(str(onnx_model_file), load_external_data=False)
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    said = re.search(r"the file is IR version (\d+), opset (\d+)", (REPO / "docs" / "predict-and-serve.md").read_text())
    assert said and (int(said[1]), int(said[2])) == (proto.ir_version, opset)
    # "1, 7 or 32 photos in one run give the same outputs as one photo at a time", on real photos.
    sess = ort.InferenceSession(str(onnx_model_file), providers=["CPUExecutionProvider"])
    photos, _ = check_images(samples_dir, Preprocess(), ["cat", "dog"], 40)
    batch = np.concatenate([photos, photos[:2]])[:32]
    alone = np.concatenate([sess.run(["logits"], {"input": batch[i : i + 1]})[0] for i in range(32)])
    for n in (7, 32):
        assert np.allclose(sess.run(["logits"], {"input": batch[:n]})[0], alone[:n], rtol=0, atol=1e-5)


def test_the_file_says_what_its_input_holds(onnx_model_file: Path) -> None:
    """A developer with only the file (Netron, `get_modelmeta()`) saw a float32 (N, 3, 224, 224) `input` and the
    mean and std, but not RGB, nor that pixels are divided by 255 first: 0-255 values run without an error, and
    the built-in model then answered `neither` to 32 of 34 photos (14 with the right values)."""
    import onnx

    sess = ort.InferenceSession(str(onnx_model_file), providers=["CPUExecutionProvider"])
    description = sess.get_modelmeta().description
    graph_input = onnx.load(str(onnx_model_file), load_external_data=False).graph.input[0]
    assert graph_input.name == "input"
    for words in (description, graph_input.doc_string):
        assert "RGB channels first (NCHW)" in words
        assert "shorter side resized to 256 px (Pillow's bicubic)" in words  # floor(224 / 0.875)
        assert "(pixel / 255 - mean) / std with mean [0.5, 0.5, 0.5]" in words and "not 0-255 values" in words
    assert "softmax(logits / temperature), temperature 1.0" in description
    assert "the answer is 'neither' below 0.5" in description
    assert "docs/examples/onnx-web-page.html" in description  # the web page, beside the Python script
    assert (REPO / "docs" / "examples" / "onnx-web-page.html").is_file()


def _mirrored(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "PNG")
    return out.getvalue()


def test_tta_and_threshold_with_onnx(onnx_model_file: Path, samples_dir: Path) -> None:
    photos = sorted((samples_dir / "cat").glob("*.jpg"))[:3] + sorted((samples_dir / "dog").glob("*.jpg"))[:3]
    plain = Predictor.load(onnx_model_file)
    tta = Predictor.load(onnx_model_file, tta=True)
    assert plain.info["backend"] == "onnx"
    items = [(p.name, p) for p in photos]
    mirrored = plain.predict_batch([(p.name, _mirrored(p)) for p in photos], "filename")
    for a, m, t in zip(plain.predict_batch(items), mirrored, tta.predict_batch(items)):
        expected = (a.probabilities["cat"] + m.probabilities["cat"]) / 2
        # PNG mirror vs in-tensor flip: same pixels, so TTA is the mean of the two predictions.
        assert t.probabilities["cat"] == pytest.approx(expected, abs=2e-3)
    unsure = Predictor.load(onnx_model_file, threshold=1.0).predict_batch(items)
    assert {p.label for p in unsure} <= {"unsure", "neither"}


def test_onnx_errors_are_one_sentence(tmp_path: Path, samples_dir: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    done = run_catdog_in_process("predict", "--model", str(bad), str(samples_dir / "cat" / "cat.1.jpg"))
    assert done.returncode == 2
    assert "broken.onnx" in done.stderr and "Traceback" not in done.stderr
    missing = run_catdog_in_process("predict", "--model", str(tmp_path / "nope.onnx"), str(samples_dir))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_torchrun_shards_and_keeps_input_order(onnx_model_file: Path, samples_dir: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in samples_dir.rglob("*.jpg"))[::3]
    files.insert(2, str(tmp_path / "missing.jpg"))  # an error entry keeps its place
    single = run_catdog_in_process("predict", "--model", str(onnx_model_file), "--json", *files)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "catdog", "predict", "--model", str(onnx_model_file), "--json", *files],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert single.returncode == 1 and multi.returncode == 1, multi.stderr[-2000:]
    expected = json.loads(single.stdout)
    got = json.loads(multi.stdout)  # only rank 0 prints: exactly one JSON list
    assert [p.get("path") for p in got] == [p.get("path") for p in expected]
    assert [p.get("label") for p in got] == [p.get("label") for p in expected]


def test_torchrun_names_the_files_left_out_once(onnx_model_file: Path, samples_dir: Path, tmp_path: Path) -> None:
    """Every process of a torchrun run walked the folder and printed the note of the files it leaves out: two
    processes, the note twice. Rank 0, which prints the answers, prints it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(samples_dir / "cat" / "cat.1.jpg", photos)
    (photos / "notes.txt").write_text("notes")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "catdog", "predict", "--model", str(onnx_model_file), str(photos)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert multi.stdout.startswith(f"{photos}/cat.1.jpg: cat")
    assert multi.stderr.count(f"note: 1 file without an image extension left out: '{photos}/notes.txt'") == 1


@pytest.mark.slow
def test_model_directory_runs_through_a_cached_onnx_export(trained_model_dir: Path, cache_dir: Path) -> None:
    first = Predictor.load(trained_model_dir)
    assert first.info["backend"] == "onnx"
    exported = list((cache_dir / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    made = exported[0].stat().st_ino  # an export is written to a new file and moved into place
    second = Predictor.load(trained_model_dir)
    assert exported[0].stat().st_ino == made  # reused, not exported again
    torch_run = Predictor.load(trained_model_dir, backend="torch")
    batch = np.random.default_rng(1).normal(size=(3, 3, 224, 224)).astype(np.float32)
    assert np.abs(second.model_fn(batch).logits - torch_run.model_fn(batch).logits).max() < 1e-3


def test_throughput_mode_keeps_order_and_answers(onnx_model_file: Path, samples_dir: Path, tmp_path: Path) -> None:
    """One batch per core in flight: the same answers, in input order, a broken file in the middle included."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    photos = sorted(str(p) for p in samples_dir.glob("*/*.jpg"))[:13]
    paths = photos[:6] + [str(broken)] + photos[6:]
    latency = Predictor.load(onnx_model_file)
    throughput = Predictor.load(onnx_model_file, throughput=True)
    assert latency.lanes == 1
    assert throughput.lanes == local_share_of_cores()  # one per core of this process
    expected = list(latency.predict_paths(paths, batch_size=3))
    got = list(throughput.predict_paths(paths, batch_size=3))  # five batches over the lanes
    assert [p.source for p in got] == paths
    assert not got[6].ok and "broken.jpg" in got[6].error
    for a, b in zip(got, expected):
        assert a.label == b.label
        if a.ok:
            assert abs(a.probabilities["cat"] - b.probabilities["cat"]) <= 1e-5
