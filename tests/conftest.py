"""Shared fixtures: the real data in ../shared/data and small images the tests make themselves.

A test whose prerequisite is absent (the shared data, Chromium, Playwright, the tracked weights of the
built-in model) skips on a developer's machine and fails under CI (``CI=true``, or
``CATDOG_REQUIRE_DATA=1``): a CI run that tested little must not pass.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CATDOG_TEST_DATA", REPO.parent / "shared" / "data"))
WEIGHTS = REPO / "src" / "catdog" / "weights"


def prerequisites_required() -> bool:
    """True under CI (``CI`` set to anything but empty/0/false) or with ``CATDOG_REQUIRE_DATA=1``."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("CATDOG_REQUIRE_DATA", "").strip() == "1"


def missing(reason: str) -> NoReturn:
    """A prerequisite of this test is absent: fail under CI, skip elsewhere."""
    if prerequisites_required():
        pytest.fail(f"{reason} (a missing prerequisite fails the run under CI or CATDOG_REQUIRE_DATA=1)", pytrace=False)
    pytest.skip(reason)


def _need(path: Path) -> Path:
    if not path.exists():
        missing(f"test data not found at {path}; set CATDOG_TEST_DATA to the shared data folder")
    return path


def builtin_model_available() -> bool:
    return (WEIGHTS / "builtin_head.safetensors").exists() and (WEIGHTS / "builtin_head.json").exists()


@pytest.fixture(scope="session")
def builtin_model() -> None:
    """The built-in model's tracked head (``src/catdog/weights/builtin_head.*``) is there."""
    if not builtin_model_available():
        missing("the built-in model's head (src/catdog/weights/builtin_head.*) is missing")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``../shared/data`` (or ``$CATDOG_TEST_DATA``)."""
    return _need(DATA)


@pytest.fixture(scope="session")
def dev_dir(data_root: Path) -> Path:
    """The 23,000 labelled Kaggle photos, flat layout (cat.N.jpg / dog.N.jpg)."""
    return _need(data_root / "dogs-vs-cats" / "train")


@pytest.fixture(scope="session")
def held_out(data_root: Path) -> dict[str, list[str]]:
    """The held-out half of ``neither/`` by subject (never fitted on): benchmarks.common.held_out_neither."""
    from benchmarks.common import held_out_neither

    return held_out_neither(_need(data_root / "neither"))


@pytest.fixture(scope="session")
def samples_dir(data_root: Path) -> Path:
    """40 photos at their original size, in cat/ and dog/."""
    return _need(data_root / "samples")


@pytest.fixture(scope="session")
def cat_photo(samples_dir: Path) -> Path:
    return samples_dir / "cat" / "cat.1.jpg"


@pytest.fixture(scope="session")
def dog_photo(samples_dir: Path) -> Path:
    return samples_dir / "dog" / "dog.1.jpg"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder, also exported to subprocesses through CATDOG_CACHE_DIR."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(path))
    return path


PINNED = REPO / "tests" / "pinned_test_photos.txt"
# A test fails when its figure is below what a model as good as recorded reaches 999 times in 1,000.
FALSE_ALARM = 0.001


def fewest_correct(n: int, accuracy: float) -> int:
    """The fewest right answers of ``n`` a model of ``accuracy`` gives, but for a FALSE_ALARM chance (binomial)."""
    from scipy.stats import binom

    return int(binom.ppf(FALSE_ALARM, n, accuracy))


def pinned_photos(dev_dir: Path) -> tuple[list[str], list[str]]:
    """The 1,000 pinned dev test photos (see the file's header) and their labels."""
    names = [line for line in PINNED.read_text().splitlines() if line and not line.startswith("#")]
    return [str(dev_dir / name) for name in names], [name.split(".")[0] for name in names]


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), mode: str = "RGB", **save) -> bytes:
    """A small generated image (a colour gradient, so that resizing is visible) as bytes."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def run_catdog(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``catdog`` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "catdog", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def run_catdog_in_process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the real ``catdog`` command line in this process (its entry point, its error handling), as
    :func:`run_catdog` does.

    For the many one-sentence refusals of a command that imports torch before it checks its arguments: a
    subprocess each would spend its seconds importing. Whatever escapes the command line's own error handling fails
    here, as it would print a traceback in a subprocess. Through :func:`catdog.cli.main`, not the typer app alone:
    the app alone answers a usage error (``--threshold nan``) with click's usage block, which a user never sees.
    Settings read at import (such as ``HF_HUB_OFFLINE``) need :func:`run_catdog`. ``stdin``: the bytes piped in.
    """
    from click.testing import CliRunner

    from catdog.cli import main

    code = 0
    with CliRunner().isolation(input=stdin) as (stdout, stderr, _):
        try:
            main(list(args), prog_name="catdog")
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        except Exception as error:
            raise AssertionError(f"catdog {' '.join(args)} raised instead of failing in one sentence") from error
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        said, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    return subprocess.CompletedProcess(args, code, said, err)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory, dev_dir: Path) -> Path:
    """A real gated EfficientNet-Lite0 model directory: ImageNet backbone + a cat/dog head fitted on 80 dev photos.

    Built directly (frozen-backbone features + logistic regression) so that tests of evaluate,
    export, explain and audit do not wait for a training run.
    """
    import torch
    from sklearn.linear_model import LogisticRegression

    from catdog.models import build_model, save_model_dir
    from catdog.models.builtin import load_builtin_gate
    from catdog.models.pretrained import pretrained_preprocess
    from catdog.preprocess import normalize, stack_uint8, to_uint8

    model = build_model("tf_efficientnet_lite0", 2, gate=True).eval()
    pre = pretrained_preprocess(model.backbone)
    files = [dev_dir / f"{label}.{i}.jpg" for label in ("cat", "dog") for i in range(1000, 1040)]
    batch = normalize(torch.from_numpy(stack_uint8([to_uint8(f, pre) for f in files])), pre)
    with torch.inference_mode():
        features = model.backbone.forward_head(model.backbone.forward_features(batch), pre_logits=True).numpy()
    labels = [0] * 40 + [1] * 40
    fit = LogisticRegression(C=0.5, max_iter=2000).fit(features, labels)
    # Two logits whose softmax equals the fitted logistic model: ±half the decision function.
    weight = np.concatenate([-fit.coef_, fit.coef_]) / 2
    bias = np.concatenate([-fit.intercept_, fit.intercept_]) / 2
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    config = {
        "architecture": "tf_efficientnet_lite0",
        "classes": ["cat", "dog"],
        "preprocess": pre.to_dict(),
        "temperature": 1.0,
        "gate": {"kind": "open-set", "threshold": 0.5},
    }
    model.add_open_set_gate(load_builtin_gate(model.backbone.num_features))
    out = tmp_path_factory.mktemp("model") / "lite0-catdog"
    save_model_dir(model, config, out)
    return out


@pytest.fixture(scope="session")
def onnx_model_file(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path, dev_dir: Path) -> Path:
    """``trained_model_dir`` exported by the real ``catdog export`` (fp32, parity-checked on 64 dev photos).

    In this process: the export is what the tests use, and a subprocess would import torch again.
    """
    out = tmp_path_factory.mktemp("onnx") / "catdog.onnx"
    done = run_catdog_in_process(
        "export", str(trained_model_dir), "--out", str(out), "--check-data", str(dev_dir), "--check-images", "64"
    )
    assert done.returncode == 0, done.stderr
    # The check runs PyTorch on up to 300 photos: 2.5 silent minutes on a loaded 2-core Xeon (2026-12-07) before
    # the line that said what was written. Asserted here, where the export runs anyway, not in a 20 s test of its own.
    said = f"Exporting to ONNX; checking it against PyTorch on 64 photos of '{dev_dir}' first.\n"
    assert done.stderr == said and done.stdout.startswith(f"Wrote {out}: max |Δprobability| vs PyTorch"), done
    return out


def checkpoint_position(out: Path) -> tuple[int, int] | None:
    """(epoch, step) of the checkpoint in ``out``, or None while there is none (or it is being replaced)."""
    import torch

    try:
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return None
    return state["epoch"], state["step"]


@contextlib.contextmanager
def chromium() -> Iterator:
    """Playwright's Chromium for a test of a page in a real browser; one missing fails under CI (a skip elsewhere)."""
    from benchmarks.bench_app import CHROMIUM

    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright (Python) is not installed: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


def require_the_app_in_chromium() -> None:
    """Playwright, Chromium, the built-in model's head and the built phone app, for the tests that run the app or
    its runtime in a browser: one missing fails under CI (a skip elsewhere), in one sentence."""
    from benchmarks.bench_app import CHROMIUM
    from catdog import webapp

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("playwright (Python) is not installed: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    if not builtin_model_available():
        missing("the built-in model's head is missing")
    try:
        webapp.runtime_dir()
    except webapp.AppNotBuiltError as err:
        missing(str(err))
