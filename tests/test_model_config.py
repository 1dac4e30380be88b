"""A hand-edited or damaged config.json in a model directory is one sentence naming the file and the field.

``catdog evaluate`` stopped on "an unexpected TypeError" for a number as ``data.root``; a string as
``temperature`` or ``gate.threshold``, or a number as ``classes`` failed as deep. Each command that reads a model
directory (evaluate, predict, export, explain, soup, serve, data audit -m) reads it through
:func:`catdog.models.read_config`, which now checks every field catdog reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catdog.models import build_model, save_model_dir
from catdog.preprocess import Preprocess

from conftest import image_bytes, run_catdog_in_process
from hostile import one_sentence

PRE = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real catnet model directory (untrained weights: only its config is under test)."""
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": PRE.to_dict(), "gate": None}
    out = tmp_path_factory.mktemp("model") / "catnet"
    save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, out)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for label in ("cat", "dog"):
        (root / label).mkdir()
        for i in range(2):
            (root / label / f"{i}.jpg").write_bytes(image_bytes(size=(80 + i, 80), quality=90 - i))
    return root


def damaged(model_dir: Path, tmp_path: Path, field: str, value: object) -> Path:
    """A copy of ``model_dir`` whose config.json has ``value`` at the dotted ``field``."""
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    parent, _, key = field.rpartition(".")
    if parent:
        config[parent] = {**(config.get(parent) or {}), key: value}
    else:
        config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data.root", 5),
        ("temperature", "hot"),
        ("gate.threshold", "high"),
        ("gate", ["open-set"]),
        ("classes", 2),
        ("classes", ["cat", 7]),
        ("preprocess.image_size", "224"),
        ("preprocess.mean", 0.5),
        ("preprocess.mean", [0.5, 0.5]),
        ("preprocess.image_size", 64.5),
        ("split.val_fraction", "a tenth"),
        # null where the command reads a number (float(None)), and lists of the wrong things: found in review
        ("temperature", None),
        ("gate.threshold", None),
        ("preprocess.image_size", None),
        ("preprocess.mean", ["a", "b", "c"]),
        ("gate.taps", [4, "x"]),
        ("temperature", 0),  # answered "cat (nan%)"
        ("temperature", -1.0),
        ("gate.threshold", 1.5),
        # valid JSON that no model can mean: one class tells nothing apart, a name twice makes answers ambiguous
        ("classes", ["cat"]),
        ("classes", ["cat", "dog", "cat"]),
        ("classes", ["caf\u00e9", "cafe\u0301"]),  # one name in two spellings (NFC, NFD): the Predictor's one
        ("split.val_fraction", None),  # evaluate --split val stopped on float(None)
        ("training.val_fraction", None),
        # what evaluate --split reads, absent or out of range: a KeyError, or a sentence that named no file
        ("split", {"test_fraction": 0.1}),
        ("split", {"val_fraction": 0.9, "test_fraction": 0.5}),
        ("split", {"val_fraction": -0.1}),
        ("training.val_fraction", 1.0),
    ],
)
def test_a_wrong_type_in_config_json_is_one_sentence_naming_the_file_and_the_field(
    model_dir: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: object
) -> None:
    monkeypatch.setenv("CATDOG_BACKEND", "torch")  # the config is under test, not an ONNX export
    model = damaged(model_dir, tmp_path, field, value)
    for args in (
        ["evaluate", str(model), str(photos), "--out", str(tmp_path / "report")],
        ["predict", "-m", str(model), str(photos)],
    ):
        done = run_catdog_in_process(*args)
        message = done.stderr.strip().removeprefix("Error: ")
        assert done.returncode != 0, (args[0], done.stdout)
        assert one_sentence(message, str(model / "config.json")) and f"'{field}'" in message, (args[0], message)


def test_a_config_json_without_classes_or_not_an_object_is_one_sentence(model_dir: Path, tmp_path: Path) -> None:
    model = damaged(model_dir, tmp_path, "gate", None)
    config_file = model / "config.json"
    for text, said in (('{"architecture": "catnet", "preprocess": {}}', "lacks 'classes'"), ("[1, 2]", "JSON object")):
        config_file.write_text(text)
        done = run_catdog_in_process("predict", "-m", str(model), str(tmp_path))
        message = done.stderr.strip().removeprefix("Error: ")
        assert done.returncode != 0 and one_sentence(message, str(config_file)) and said in message, message


def test_a_config_that_is_not_an_object_gives_the_remedy_it_is_given(tmp_path: Path) -> None:
    """An ONNX file's metadata is checked with "export it again": every sentence of the check must end so."""
    from catdog.errors import ModelError
    from catdog.models import check_config

    with pytest.raises(ModelError) as refused:
        check_config(["cat", "dog"], tmp_path / "model.onnx", "export it again")
    assert str(refused.value) == f"'{tmp_path / 'model.onnx'}' is damaged: it must hold a JSON object; export it again."


def test_a_preprocessing_value_out_of_range_is_one_sentence_without_python_words(
    model_dir: Path, tmp_path: Path
) -> None:
    model = damaged(model_dir, tmp_path, "preprocess.image_size", 4)
    done = run_catdog_in_process("predict", "-m", str(model), str(tmp_path))
    message = done.stderr.strip().removeprefix("Error: ")
    assert done.returncode != 0 and one_sentence(message, str(model / "config.json")), message
    assert "image size 4 is too small" in message and ".)" not in message, message


def onnx_with_metadata(path: Path, **changes: str | None) -> Path:
    """A real, tiny ONNX classifier (mean colour → two logits) with catdog's metadata, ``changes`` written over it
    (None drops a key)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from catdog.inference.onnx_session import set_metadata

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["colour"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["colour", "weight"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.eye(3, 2, dtype=np.float32), "weight")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    set_metadata(proto, {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": PRE.to_dict()})
    values = {prop.key: changes.get(prop.key, prop.value) for prop in proto.metadata_props}
    del proto.metadata_props[:]
    for key, value in values.items():
        if value is not None:  # a change of None drops the key
            proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("temperature", '"hot"'),
        ("temperature", "0"),
        ("classes", "2"),
        ("preprocess", '{"image_size": "224"}'),
        ("gate", '["open-set"]'),
        ("data", '{"root": 5}'),
        ("classes", "[cat, dog"),  # not JSON at all
    ],
)
def test_damaged_metadata_in_an_onnx_file_is_one_sentence_naming_the_file_and_the_field(
    photos: Path, tmp_path: Path, field: str, text: str
) -> None:
    """The file's metadata is checked as config.json is (check_config): json.loads alone let a wrong type through
    to a TypeError deep in predict, evaluate or serve."""
    good = run_catdog_in_process("predict", "-m", str(onnx_with_metadata(tmp_path / "good.onnx")), str(photos))
    assert good.returncode == 0, good.stderr  # the tiny model runs: only the metadata below is wrong
    model = onnx_with_metadata(tmp_path / "hand-made.onnx", **{field: text})
    for args in (
        ["predict", "-m", str(model), str(photos)],
        ["evaluate", str(model), str(photos), "--out", str(tmp_path / "report")],
    ):
        done = run_catdog_in_process(*args)
        message = done.stderr.strip().removeprefix("Error: ")
        assert done.returncode != 0, (args[0], done.stdout)
        assert one_sentence(message, str(model)) and f"'{field}" in message, (args[0], message)
        assert message.endswith("; export it again."), (args[0], message)  # not "train the model again"


def test_an_onnx_file_with_only_classes_and_preprocess_still_predicts(photos: Path, tmp_path: Path) -> None:
    """classes and preprocess are all the metadata an ONNX file needs: checking it as config.json is must not also
    ask for the 'architecture' (or anything else) that only a model directory needs to rebuild its network."""
    bare = {key: None for key in ("architecture", "temperature", "gate", "split", "data", "catdog_version")}
    model = onnx_with_metadata(tmp_path / "bare.onnx", **bare)
    done = run_catdog_in_process("predict", "-m", str(model), str(photos))
    assert done.returncode == 0, done.stderr
