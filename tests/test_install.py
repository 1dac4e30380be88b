"""A broken install is said once, as one sentence: package data and dependencies that are missing are errors.

Each test runs catdog from a copy of its package (or with a dependency made unimportable) in a
subprocess, so that the working tree stays whole.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement  # pytest's own dependency, as tomli is on Python 3.10

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import REPO, image_bytes
from hostile import one_sentence


def package_copy(tmp_path: Path) -> Path:
    """A copy of the ``catdog`` package under ``tmp_path/site``, to damage."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "src" / "catdog", site / "catdog", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def python(code: str, site: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)} if site else None
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


BUILTIN_CONFIG = """
import json
from catdog.errors import CatdogError
from catdog.models.files import builtin_config
try:
    print("config:", json.dumps(builtin_config()))
except CatdogError as err:
    print("error:", err)
"""


def builtin_config_error(site: Path) -> str:
    done = python(BUILTIN_CONFIG, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error: "), f"a broken install gave a config: {done.stdout}"
    message = done.stdout.removeprefix("error: ").strip()
    assert one_sentence(message) and "reinstall catdog" in message, message
    return message


def test_the_shipped_config_carries_the_gate_record(tmp_path: Path) -> None:
    done = python(BUILTIN_CONFIG, package_copy(tmp_path))
    assert done.stdout.startswith("config: "), done.stdout + done.stderr
    gate = json.loads(done.stdout.removeprefix("config: "))["gate"]
    assert gate["score"] and gate["fitted_on"]["pets"], gate


def test_a_missing_gate_record_is_an_error_not_an_empty_record(tmp_path: Path) -> None:
    """Training records the shipped gate's figures in config.json: without the file they would be silently empty."""
    site = package_copy(tmp_path)
    (site / "catdog" / "weights" / "builtin_gate.json").unlink()
    assert "builtin_gate.json" in builtin_config_error(site)


def test_a_damaged_head_record_is_an_error(tmp_path: Path) -> None:
    site = package_copy(tmp_path)
    (site / "catdog" / "weights" / "builtin_head.json").write_text('{"classes": ["cat", "dog"], ')
    assert "builtin_head.json" in builtin_config_error(site)


DAMAGED_WEIGHTS = """
import sys
from pathlib import Path
from safetensors.torch import save_file
import torch
from catdog.errors import CatdogError
from catdog.models.builtin import load_builtin
from catdog.models.files import WEIGHTS_DIR

weights = Path(str(WEIGHTS_DIR))
head, gate = weights / "builtin_head.safetensors", weights / "builtin_gate.safetensors"
good_head = head.read_bytes()
for damage in ("head cut short", "gate without its weight"):
    if damage == "head cut short":
        head.write_bytes(good_head[:100])
    else:
        head.write_bytes(good_head)
        save_file({"bias": torch.zeros(1)}, str(gate))
    try:
        load_builtin()
        print("loaded")
    except CatdogError as err:
        print(err)
"""


def test_damaged_shipped_weights_say_reinstall_catdog_in_one_sentence(tmp_path: Path) -> None:
    """The built-in head and gate files are read by catdog itself: one cut short stopped `predict` on a
    SafetensorError traceback, one without its `weight` on a KeyError, where a broken install says so."""
    site = package_copy(tmp_path)
    done = python(DAMAGED_WEIGHTS, site)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout
    for message, name in zip(lines, ("builtin_head.safetensors", "builtin_gate.safetensors")):
        assert one_sentence(message, name) and "reinstall catdog" in message, message


def test_a_broken_scratch_module_surfaces_its_import_error(tmp_path: Path) -> None:
    """A from-scratch net module that cannot be imported is a broken install, not an "unknown model"."""
    site = package_copy(tmp_path)
    scratch = site / "catdog" / "models" / "scratch.py"
    source = scratch.read_text()
    future = "from __future__ import annotations\n"
    scratch.write_text(source.replace(future, future + "import catdog_missing_dependency\n", 1))
    done = python("from catdog.models import build_model; build_model('catnet', 2)", site)
    assert done.returncode != 0
    assert "No module named 'catdog_missing_dependency'" in done.stderr, done.stderr
    assert "Unknown model" not in done.stderr, done.stderr


def test_a_missing_heif_dependency_is_one_sentence_not_unsupported_photos(tmp_path: Path) -> None:
    """pillow-heif is a dependency: without it catdog says so, rather than calling every HEIC photo unsupported."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes("PNG"))
    code = (
        "import sys; sys.modules['pillow_heif'] = None  # what an uninstalled package looks like to import\n"
        f"sys.argv = ['catdog', 'predict', {str(photo)!r}]\n"
        "from catdog.cli import main; main()"
    )
    done = python(code)
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert one_sentence(message) and "pillow-heif" in message, message


def test_every_dependency_has_an_upper_bound() -> None:
    """Every dependency in pyproject.toml is capped, so that a release nobody has run catdog with (a major one
    above all) does not reach a user's install. ``starlette>=0.51`` came in with none."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [line for extra in project["optional-dependencies"].values() for line in extra]
    uncapped = [
        line for line in lines if not any(s.operator in ("<", "<=", "==", "~=") for s in Requirement(line).specifier)
    ]
    assert not uncapped, uncapped
