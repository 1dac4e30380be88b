"""``catdog soup``: models of one recipe averaged into one model, measured against its members; bad members refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from catdog.errors import CatdogError
from catdog.models import build_model
from catdog.predict import Predictor
from catdog.soup import check_members
from catdog.train import TrainConfig, train

from conftest import REPO, run_catdog_in_process


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, dev_dir: Path) -> tuple[Path, list[Path]]:
    """``(data, [two models])``: frozen-backbone Lite0 heads trained with two seeds on 60 real photos."""
    root = tmp_path_factory.mktemp("soup")
    data = root / "data"
    data.mkdir()
    for label in ("cat", "dog"):
        for i in range(2000, 2030):
            shutil.copy(dev_dir / f"{label}.{i}.jpg", data / f"{label}.{i}.jpg")
    models = []
    for seed in (1, 2):
        out = root / f"seed-{seed}"
        options = dict(model="tf_efficientnet_lite0", freeze="backbone", epochs=3, batch_size=8, lr=3e-3)
        train(
            TrainConfig(
                data_dir=str(data), out=str(out), cache_dir=str(root / "cache"), seed=seed, workers=0, **options
            )
        )
        models.append(out)
    return data, models


@pytest.mark.slow  # two trainings and three measured models, about a minute on 2 cores
def test_a_soup_is_the_mean_of_its_members_and_is_measured_beside_them(
    members: tuple[Path, list[Path]], tmp_path: Path, cache_dir: Path, dev_dir: Path
) -> None:
    data, models = members
    out = tmp_path / "soup"
    done = run_catdog_in_process("soup", *map(str, models), "--data", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"Averaged 2 models into '{out}'" in done.stdout

    states = [load_file(str(m / "model.safetensors")) for m in models]
    soup = load_file(str(out / "model.safetensors"))
    assert soup.keys() == states[0].keys()
    assert not torch.equal(states[0]["head.weight"], states[1]["head.weight"])  # two seeds: two heads
    for key in ("head.weight", "head.bias"):
        assert torch.allclose(soup[key], (states[0][key] + states[1][key]) / 2, atol=1e-7)
    assert torch.equal(soup["backbone.conv_stem.weight"], states[0]["backbone.conv_stem.weight"])  # frozen: shared

    config = json.loads((out / "config.json").read_text())
    recorded = [json.loads((m / "config.json").read_text()) for m in models]
    assert config["soup"]["members"] == [str(m.resolve()) for m in models]
    assert config["gate"] == recorded[0]["gate"]  # the members' gate, which averaging leaves as it is
    metrics = config["metrics"]
    assert metrics["val_images"] == recorded[0]["data"]["val_images"]
    assert len(metrics["members_val_accuracy"]) == 2
    assert all(0 <= a <= 1 for a in [metrics["val_accuracy"], *metrics["members_val_accuracy"]])
    assert f"{100 * metrics['val_accuracy']:.2f} %" in done.stdout
    # 6 validation photos: no temperature is fitted, and the soup says so as train does (it once kept 1.0 silently
    # and copied its first member's record).
    kept = f"temperature 1.0 kept: {metrics['val_images']} validation photos are too few to fit one on"
    assert config["temperature"] == 1.0 and config["calibration"].startswith(kept), config["calibration"]
    assert f"The soup's {kept}" in done.stdout, done.stdout
    # The members' exports stay in the cache for later use; the soup's own at T = 1 was only for measuring.
    assert len(list((cache_dir / "onnx").glob("model-*.onnx"))) == 2

    # The soup is a model directory like any other, at its own temperature.
    predictor = Predictor.load(out, backend="torch")
    assert predictor.temperature == config["temperature"]
    answers = list(predictor.predict_paths([str(p) for p in sorted(data.glob("*.jpg"))[:4]]))
    assert all(p.ok and abs(sum(p.probabilities.values()) - 1) < 1e-4 for p in answers)

    # --json's every key is described where the soup is (temperature_note once was nowhere).
    as_json = run_catdog_in_process("soup", *map(str, models), "--data", str(data), "--out", str(out), "--json",
                                    "--overwrite")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    printed = json.loads(as_json.stdout)
    assert printed["temperature_note"] == config["calibration"] and printed["out"] == str(out), printed
    guide = (REPO / "docs" / "training.md").read_text()
    soup_section = guide[guide.index("## Averaging runs: `catdog soup`") :].split("\n## ")[0]
    assert [key for key in printed if f"`{key}`" not in soup_section] == []

    again = run_catdog_in_process("soup", *map(str, models), "--data", str(data), "--out", str(out))
    assert again.returncode != 0 and "already holds a model" in again.stderr
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "notes.txt").write_text("not a model")
    elsewhere = run_catdog_in_process("soup", *map(str, models), "--data", str(data), "--out", str(keep), "--overwrite")
    assert elsewhere.returncode != 0 and "not a model directory" in elsewhere.stderr
    assert (keep / "notes.txt").read_text() == "not a model"

    # Measured on other photos than the members held out, a soup's figures would mean nothing.
    other = tmp_path / "other-photos"
    other.mkdir()
    for label in ("cat", "dog"):
        for i in range(2100, 2200):
            shutil.copy(dev_dir / f"{label}.{i}.jpg", other / f"{label}.{i}.jpg")
    elsewhere = run_catdog_in_process("soup", *map(str, models), "--data", str(other), "--out", str(tmp_path / "o"))
    assert elsewhere.returncode != 0 and "give the folder they were trained on" in elsewhere.stderr
    assert not (tmp_path / "o").exists()


def fake_member(root: Path, name: str, **changes) -> Path:
    """A member's config.json alone: the refusals come before any weights are read."""
    config = {
        "architecture": "tf_efficientnet_lite0",
        "classes": ["cat", "dog"],
        "preprocess": {"image_size": 224},
        "gate": {"kind": "open-set", "taps": [4, 6], "threshold": 0.5},
        "data": {"fingerprint": "f" * 32, "val_images": 6},
        "split": {"by": "content hash", "val_fraction": 0.1, "test_fraction": 0.0},
    }
    for key, value in changes.items():
        config[key] = value
    out = root / name
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"architecture": "catnet"}, ["random weights"]),
        ({"architecture": "tf_efficientnet_lite2"}, ["differ in architecture"]),
        ({"classes": ["cat", "dog", "fox"]}, ["differ in classes"]),
        ({"gate": {"kind": "open-set", "taps": [4, 5], "threshold": 0.5}}, ["gates", "--freeze"]),
        ({"data": {"fingerprint": "e" * 32, "val_images": 6}}, ["other photos"]),
        # The option that differs, not always --val-fraction.
        ({"split": {"by": "content hash", "val_fraction": 0.1, "test_fraction": 0.2}}, ["(see --test-fraction)."]),
    ],
)
def test_members_of_other_recipes_or_data_are_refused_in_one_sentence(
    tmp_path: Path, changes: dict, words: list[str]
) -> None:
    first = fake_member(tmp_path, "first")
    if changes.get("architecture") == "catnet":
        first, second = fake_member(tmp_path, "second", **changes), fake_member(tmp_path, "third", **changes)
    else:
        second = fake_member(tmp_path, "second", **changes)
    done = run_catdog_in_process("soup", str(first), str(second), "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert done.returncode != 0
    assert all(w in done.stderr for w in words), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_soup_with_its_own_member_is_refused(tmp_path: Path) -> None:
    first, second = fake_member(tmp_path, "first"), fake_member(tmp_path, "second")
    members = [str(first.resolve()), str(second.resolve())]
    earlier = fake_member(tmp_path, "soup", soup={"members": members})
    out = tmp_path / "o"
    done = run_catdog_in_process("soup", str(earlier), str(second), "--data", str(tmp_path), "--out", str(out))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert f"'{earlier}' is already a soup with '{second}' in it" in done.stderr
    assert not out.exists()
    # A soup of other models than these averages with them like any model.
    other = fake_member(tmp_path, "other-soup", soup={"members": [str(tmp_path / "elsewhere")]})
    check_members([str(other), str(second)], [json.loads((d / "config.json").read_text()) for d in (other, second)])


def test_a_soup_with_its_own_member_is_refused_whatever_its_name(tmp_path: Path) -> None:
    """config.json records a member whose name is not UTF-8 with its byte as the text '\\xe9'; the members named on
    the command line were compared as the file system names them, so such a member counted twice unnoticed."""
    from catdog.models import save_model_dir

    second = fake_member(tmp_path, os.fsdecode(b"s\xe9cond"))
    model = build_model("catnet", 2, pretrained=False)
    config = json.loads((second / "config.json").read_text()) | {"soup": {"members": [str(second.resolve())]}}
    save_model_dir(model, config, tmp_path / "soup")  # written as every soup is
    configs = [json.loads((d / "config.json").read_text()) for d in (tmp_path / "soup", second)]
    with pytest.raises(CatdogError, match="is already a soup with"):
        check_members([str(tmp_path / "soup"), str(second)], configs)


def test_a_soup_of_one_model_is_refused(tmp_path: Path) -> None:
    first = fake_member(tmp_path, "first")
    done = run_catdog_in_process("soup", str(first), "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "at least two" in done.stderr
    twice = run_catdog_in_process("soup", str(first), str(first), "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert twice.returncode != 0 and "named twice" in twice.stderr


def test_a_shipped_model_or_a_file_is_no_member(tmp_path: Path) -> None:
    first = fake_member(tmp_path, "first")
    shipped = run_catdog_in_process("soup", str(first), "builtin-large", "--data", str(tmp_path), "--out", "o")
    assert shipped.returncode == 2 and "'builtin-large' is a model catdog ships" in shipped.stderr
    assert "does not exist" not in shipped.stderr  # what it once said, of a name it lists as accepted
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"\0" * 8)
    not_dir = run_catdog_in_process("soup", str(first), str(a_file), "--data", str(tmp_path), "--out", "o")
    assert not_dir.returncode == 2 and f"Model '{a_file}' is a file, not a model directory" in not_dir.stderr


def test_a_soup_below_its_best_member_suggests_a_comparison_that_runs(tmp_path: Path) -> None:
    """A soup below its best member said to compare them with `catdog evaluate MODEL DATA_DIR --split test`, which
    evaluate refuses for members trained without a test split (`--test-fraction` is 0 by default)."""
    from catdog.soup import SoupConfig, summary

    metrics = {"val_images": 6, "val_accuracy": 0.8333, "members_val_accuracy": [0.8333, 1.0]}
    for test_fraction, suggested in ((0.0, "catdog evaluate MODEL OTHER_PHOTOS"), (0.1, "--split test")):
        out = fake_member(
            tmp_path, f"soup-{test_fraction}", split={"val_fraction": 0.1, "test_fraction": test_fraction}
        )
        said = summary(SoupConfig(models=["a", "b"], data_dir="data", out=str(out)), metrics)
        assert "photos none of them has been chosen on" in said and suggested in said, said
