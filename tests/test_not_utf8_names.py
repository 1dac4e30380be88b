"""File names that are not UTF-8 (a Latin-1 byte: b'caf\\xe9.jpg'), in every command's output.

Python keeps such a byte as the lone surrogate '\\udce9'. json.dumps wrote it as that escape, which strict JSON
parsers refuse, and a strict UTF-8 stdout could not print it at all. Every command writes it as the text '\\xe9'.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catdog.fsutil import utf8_safe
from catdog.preprocess import Preprocess

from conftest import run_catdog_in_process

# The bytes of the names, as a user's old camera or a Latin-1 file system wrote them.
PHOTO = os.fsdecode(b"caf\xe9.jpg")
BROKEN = os.fsdecode(b"br\xffoken.jpg")
MODEL_FILE = os.fsdecode(b"mod\xe8le.onnx")
MODEL_DIR = os.fsdecode(b"r\xe9seau")  # safetensors opens only a UTF-8 name
CACHE = os.fsdecode(b"cach\xe9")
REPORT = os.fsdecode(b"rapport-\xe9t\xe9")


@pytest.fixture(scope="module")
def folders(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Labelled photos in a folder, among them a real JPEG and a broken file, and a tiny model trained on them (as its
    config.json says) in a folder, all named with a byte that is not UTF-8."""
    from catdog.models import build_model, save_model_dir

    root = tmp_path_factory.mktemp("not-utf8")
    data = root / os.fsdecode(b"donn\xe9es")
    for label in ("cat", "dog"):
        (data / label).mkdir(parents=True)
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:3]:
            shutil.copy(photo, data / label / photo.name)
    shutil.copy(sorted((samples_dir / "cat").glob("*.jpg"))[3], data / "cat" / PHOTO)
    (data / "dog" / BROKEN).write_bytes(b"not a photo")
    # A small from-scratch net: what is printed does not depend on the model, and it loads in a second.
    pre = Preprocess(image_size=64, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": pre.to_dict(), "gate": None}
    config["data"] = {"root": str(data), "train_images": 6}  # evaluate notes that these photos trained it
    save_model_dir(build_model("catnet", 2, pretrained=False).eval(), config, root / MODEL_DIR)
    from catdog.export import export

    (root / "onnx").mkdir()
    export(root / MODEL_DIR, root / "onnx" / MODEL_FILE, check_dir=data, n_check=4)
    return {
        "data": str(data),
        "model": str(root / MODEL_DIR),
        "onnx": str(root / "onnx" / MODEL_FILE),
        "root": str(root),
    }


# Each command, its arguments, its exit status and the names that must be recognisable in what it prints.
COMMANDS = {
    "predict": (["predict", "-m", "{model}", "{data}"], 1, "br\\xffoken.jpg"),
    # ONNX Runtime takes a file name only in UTF-8: "not a usable ONNX model (__init__(): incompatible ...)"
    "predict with an ONNX file": (["predict", "-m", "{onnx}", "{data}"], 1, "br\\xffoken.jpg"),
    "data check": (["data", "check", "{data}", "--cache-dir", "{root}/cache"], 1, "br\\xffoken.jpg"),
    "data audit": (
        ["data", "audit", "{data}", "-m", "{model}", "--folds", "2", "--out", f"{{root}}/{REPORT}-{{output}}"],
        0,
        "br\\xffoken.jpg",
    ),
    "evaluate": (
        ["evaluate", "{model}", "{data}", "--out", f"{{root}}/{REPORT}-{{output}}"],
        0,
        "br\\xffoken.jpg",
        "rapport-\\xe9t\\xe9",
    ),
    "export": (
        ["export", "{model}", "--out", f"{{root}}/{MODEL_FILE}", "--check-data", "{data}", "--check-images", "8"],
        0,
        "mod\\xe8le.onnx",
    ),
    "export --format web": (
        ["export", "{model}", "--format", "web", "--out", f"{{root}}/{CACHE}-app-{{output}}"],
        0,
        "cach\\xe9-app-",
    ),
    "cache": (["cache", "--cache-dir", f"{{root}}/{CACHE}"], 0, "cach\\xe9"),
    "explain": (["explain", "{model}", f"{{data}}/cat/{PHOTO}", "--out", "{root}/heat.png"], 0, "caf\\xe9.jpg"),
}
TEXT_ONLY = {"explain"}  # no --json
# In the default suite: the two reports (JSON beside them) and the plain outputs that crashed or were refused. The
# other cases run with the slow tests (each a subprocess of a few seconds; predict's and data check's own tests
# cover theirs).
FAST = {
    ("data audit", "--json"),
    ("evaluate", "--json"),
    ("export", "text"),
    ("explain", "text"),
    ("predict with an ONNX file", "text"),
    ("export --format web", "text"),
}


@pytest.mark.parametrize(
    ("command", "output"),
    [
        pytest.param(command, output, marks=() if (command, output) in FAST else pytest.mark.slow)
        for command in COMMANDS
        for output in ("--json", "text")
        if not (output == "--json" and command in TEXT_ONLY)
    ],  # fmt: skip
)
def test_a_name_that_is_not_utf8_is_printed_as_valid_utf8(folders: dict[str, str], command: str, output: str) -> None:
    """Run as a user runs it, with a strict UTF-8 stdout: the name's byte is the text '\\xe9' (recognisable),
    never the surrogate '\\udce9' in JSON nor a UnicodeEncodeError (exit 70) in the text."""
    template, status, *names = COMMANDS[command]
    args = [arg.format(**folders, output=output.strip("-")) for arg in template] + (
        [output] if output == "--json" else []
    )
    # Strict UTF-8, as under a user's UTF-8 locale; the cache (predict's ONNX export of the model) kept apart.
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "CATDOG_CACHE_DIR": f"{folders['root']}/cache"}
    done = subprocess.run([sys.executable, "-m", "catdog", *args], capture_output=True, env=env, timeout=300)
    assert done.returncode == status, done.stderr.decode(errors="replace")
    printed = done.stdout.decode("utf-8")  # strict: fails on a raw byte or an encoded surrogate
    assert "\\udc" not in printed
    assert "\\udc" not in done.stderr.decode("utf-8"), done.stderr  # notes, progress lines
    if output == "--json":
        strings = _strings(json.loads(printed))
        assert all(any(name in text for text in strings) for name in names), printed
    else:
        assert all(name in printed for name in names), printed
    # metrics.json, suspects.json; the web app's model.json, which names the model's folder
    for written in Path(folders["root"]).glob(f"*-{output.strip('-')}/*.json"):
        assert "\\udc" not in written.read_text(encoding="utf-8"), written
        assert json.loads(written.read_text(encoding="utf-8"))


def _strings(value: object) -> list[str]:
    """Every string in a parsed JSON document, keys included."""
    if isinstance(value, dict):
        return [*value, *(text for item in value.values() for text in _strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [value] if isinstance(value, str) else []


def test_features_are_computed_in_a_cache_folder_whose_name_is_not_utf8(tmp_path: Path) -> None:
    """Frozen-backbone training and the open-set gate run the feature extractor's ONNX export from the cache. Its
    session was opened by name, which ONNX Runtime takes only in UTF-8: 'incompatible constructor arguments'."""
    import numpy as np
    import torch
    from torch import nn

    from catdog.features import onnx_feature_fn

    extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    features = onnx_feature_fn(extractor, tmp_path / CACHE / "onnx" / "features.onnx", image_size=16)
    batch = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        expected = extractor(batch).numpy()
    np.testing.assert_allclose(features(batch), expected, atol=1e-5)


def test_only_a_model_folder_whose_name_is_not_utf8_has_its_weights_read_as_bytes(
    folders: dict[str, str], tmp_path: Path
) -> None:
    """safetensors opens only a UTF-8 name, so such a folder's weights are read as bytes. Every folder's were, which
    held the weights twice while they loaded (640 MB more for a 335 MB file) where safetensors maps the file."""
    import tracemalloc

    from catdog.models import load_model_dir

    shutil.copytree(folders["model"], tmp_path / "model")
    weights = (tmp_path / "model" / "model.safetensors").stat().st_size
    load_model_dir(tmp_path / "model")  # imports and first-call caches out of the measure
    peaks = {}
    for folder in (tmp_path / "model", Path(folders["model"])):
        tracemalloc.start()
        try:
            load_model_dir(folder)
            peaks[folder.name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[MODEL_DIR] >= weights, peaks  # the bytes, seen by this measure
    assert peaks["model"] < weights // 4, (peaks, weights)


def test_a_model_folder_records_a_training_folder_not_utf8_as_valid_utf8(tmp_path: Path) -> None:
    """config.json records the training folder (and --out). Written with json.dumps it was the lone surrogate
    '\\udce9', which strict JSON parsers refuse; written as the text '\\xe9', evaluate and export still find the
    folder (evaluate's note that these photos trained the model; export's check photos by default)."""
    from catdog.evaluate import split_warnings
    from catdog.export import default_check_dir
    from catdog.models import build_model, read_config, save_model_dir

    data = tmp_path / os.fsdecode(b"donn\xe9es")
    data.mkdir()
    pre = Preprocess(image_size=32, crop_pct=1.0, interpolation="bilinear")
    config = {"architecture": "catnet", "classes": ["cat", "dog"], "preprocess": pre.to_dict(), "gate": None}
    config["data"] = {"root": str(data), "train_images": 8}
    save_model_dir(build_model("catnet", 2, pretrained=False), config, tmp_path / MODEL_DIR)

    written = (tmp_path / MODEL_DIR / "config.json").read_text(encoding="utf-8")
    assert "\\udc" not in written and "donn\\\\xe9es" in written, written
    record = read_config(tmp_path / MODEL_DIR)
    assert "is the folder this model was trained on" in split_warnings(record, data, "all", 8)[0]
    assert default_check_dir(record) == str(data)


def test_a_class_folder_whose_name_is_not_utf8_is_a_label_in_valid_utf8(samples_dir: Path, tmp_path: Path) -> None:
    """A class folder 'chi\\xe9ns/' was the label 'chi\\udce9n': training ran every epoch, then stopped on a
    UnicodeEncodeError (exit 70) hashing the labels for config.json, and wrote no model. A label is text."""
    from catdog.data import prepare

    for folder in (b"cats", b"chi\xe9ns"):
        (tmp_path / "data" / os.fsdecode(folder)).mkdir(parents=True)
        for photo in sorted((samples_dir / "dog").glob("*.jpg"))[:2]:
            shutil.copy(photo, tmp_path / "data" / os.fsdecode(folder) / photo.name)
    data = prepare(tmp_path / "data", Preprocess(image_size=32), tmp_path / "cache", workers=1)
    assert data.classes == ["cat", "chi\\xe9n"]
    assert len(data.fingerprint()) == 32  # the labels hashed


@pytest.mark.slow  # a training run, an evaluation and an export: 20-50 s on a busy 2-core machine
def test_a_model_trained_from_and_into_folders_not_utf8_records_them_as_valid_utf8(
    samples_dir: Path, tmp_path: Path
) -> None:
    """The same, as a user does it: a real training run, a class folder so named too ('chiens' with a Latin-1
    'e acute'), then evaluate and export without --check-data."""
    data, model = tmp_path / os.fsdecode(b"donn\xe9es"), tmp_path / MODEL_DIR
    for label, folder in (("cat", "cat"), ("dog", os.fsdecode(b"chi\xe9ns"))):
        (data / folder).mkdir(parents=True)
        for photo in sorted((samples_dir / label).glob("*.jpg"))[:4]:
            shutil.copy(photo, data / folder / photo.name)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    train = ["train", str(data), "--out", str(model), "--image-size", "32", "--epochs", "1", "--batch-size", "4"]
    trained = run_catdog_in_process(*train, *cache)
    assert trained.returncode == 0, trained.stderr
    assert "\\udc" not in trained.stderr and "r\\xe9seau" in trained.stderr  # "saved r\xe9seau: ..."

    record = (model / "config.json").read_text(encoding="utf-8")
    assert "\\udc" not in record
    assert json.loads(record)["data"]["root"] == utf8_safe(str(data.resolve()))
    assert json.loads(record)["classes"] == ["cat", "chi\\xe9n"]
    evaluated = run_catdog_in_process("evaluate", str(model), str(data))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "donn\\xe9es' is the folder this model was trained on" in evaluated.stderr
    exported = run_catdog_in_process("export", str(model), "--out", str(tmp_path / "model.onnx"))  # no --check-data
    assert exported.returncode == 0, exported.stderr


def test_soup_prints_its_out_folder_as_every_command_prints_a_path() -> None:
    """Plain `catdog soup` printed --out as it is: a name that is not UTF-8 stopped it on a UnicodeEncodeError
    (exit 70) where stdout is strict UTF-8, once the soup was written; the other commands print '\\xe9'."""
    from catdog.soup import SoupConfig, summary

    config = SoupConfig(models=["seed-1", "seed-2"], data_dir="data", out=os.fsdecode(b"soupe-\xe9t\xe9"))
    said = summary(config, {"val_images": 6, "val_accuracy": 1.0, "members_val_accuracy": [1.0, 1.0]})
    assert "Averaged 2 models into 'soupe-\\xe9t\\xe9'." in said
    said.encode("utf-8")  # strict, as such a stdout is


def test_training_logs_a_name_that_is_not_utf8_as_every_command_prints_it() -> None:
    """train's lines go to stderr, where Python writes the byte's lone surrogate as '\\udce9': 'saved r\\udce9seau'.
    And rich read a name's square brackets as markup: 'saved models[v2]' printed 'saved models'."""
    import io

    from rich.console import Console

    from catdog.training.progress import Reporter

    written = io.StringIO()
    Reporter(Console(file=written, width=200)).info(f"saved {MODEL_DIR}[v2]:dog:")  # no rich markup, no emoji
    assert written.getvalue().endswith("saved r\\xe9seau[v2]:dog:\n")


def test_serve_describes_a_model_in_a_folder_whose_name_is_not_utf8(
    folders: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/v1/model named the model's folder by its lone surrogate, which FastAPI cannot write as JSON: a 500
    (PydanticSerializationError), where a client and the page ask what is served."""
    import httpx

    from serving import running

    monkeypatch.setenv("CATDOG_CACHE_DIR", f"{folders['root']}/cache")  # the model's export, made once
    with running("--model", folders["model"], log=tmp_path / "server.log") as server:
        described = httpx.get(server.url + "/api/v1/model", timeout=30)
        app_config = httpx.get(server.url + "/app/model.json", timeout=30)
    assert described.status_code == 200, described.text
    assert described.json()["name"] == app_config.json()["name"] == "r\\xe9seau"


def test_serve_logs_a_model_folder_whose_name_is_not_utf8_as_every_command_prints_it(
    folders: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's "Model '%s' loaded" line (shown where a deployment configures logging) wrote the folder's lone
    surrogate: 'r\\udce9seau' in the log, where every command prints 'r\\xe9seau'."""
    import asyncio
    import logging

    from catdog.serve.settings import ServeSettings
    from catdog.serve.state import ServeState

    monkeypatch.setenv("CATDOG_CACHE_DIR", f"{folders['root']}/cache")  # the model's export, made once

    async def load() -> None:
        state = ServeState(ServeSettings(model=folders["model"], decode_threads=1))
        try:
            await state.load()
        finally:
            await state.close()

    caplog.set_level(logging.INFO, logger="catdog.serve")
    asyncio.run(load())
    assert f"Model '{utf8_safe(folders['model'])}' loaded; ready." in caplog.messages, caplog.messages
    assert "r\\xe9seau' loaded" in caplog.text and "\\udc" not in caplog.text, caplog.text


def test_serve_logs_a_model_that_failed_to_load_as_every_command_prints_its_name(tmp_path: Path) -> None:
    """Why a model failed to load goes to serve's log (stderr), which wrote the lone surrogate as '\\udce9'."""
    from serving import Server

    model = tmp_path / MODEL_DIR
    model.mkdir()
    (model / "config.json").write_text("{ not json")
    srv = Server("--model", str(model), log=tmp_path / "server.log")
    try:
        srv.wait("/readyz", status=500, timeout=120)
    finally:
        srv.stop()
    assert "could not be loaded: '" in srv.log() and "r\\xe9seau/config.json' cannot be read" in srv.log(), srv.log()
    assert "\\udc" not in srv.log(), srv.log()


def test_the_shipped_weights_load_where_catdog_is_installed_under_a_folder_whose_name_is_not_utf8(
    tmp_path: Path,
) -> None:
    """The built-in models' head, gates and builtin-large's weights were opened by name, which safetensors refuses
    for a name that is not UTF-8: catdog installed under 'site-\\xe9' (a virtual environment in such a folder)
    could not load either built-in model. This imports catdog from such a folder (a link to this checkout)."""
    import catdog

    site = tmp_path / os.fsdecode(b"site-\xe9")
    site.mkdir()
    (site / "catdog").symlink_to(Path(catdog.__file__).parent, target_is_directory=True)
    check = (
        "import catdog, torch\n"
        "from catdog.models.builtin import load_builtin, load_builtin_large\n"
        "from catdog.models.files import WEIGHTS_DIR\n"
        "assert not str(WEIGHTS_DIR).isascii(), WEIGHTS_DIR\n"
        "for load in (load_builtin, load_builtin_large):\n"
        "    model, _ = load()\n"
        "    print(load.__name__, model.open_set.taps)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["load_builtin (4, 6)", "load_builtin_large (4, 6)"], done.stdout
