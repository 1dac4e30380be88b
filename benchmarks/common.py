"""What every benchmark shares: the machine description, the data location, result records."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CATDOG_TEST_DATA", REPO.parent / "shared" / "data"))
DEV_DIR = DATA / "dogs-vs-cats" / "train"
SAMPLES_DIR = DATA / "samples"


@dataclass
class Result:
    """One figure (one row) of the benchmark table in docs/benchmarks.md."""

    benchmark: str
    figure: str
    value: float
    unit: str
    command: str
    floor: str = ""  # the figure a run must meet, e.g. ">= 98.0 %", or "" when none
    passed: bool | None = None
    machine: str = field(default_factory=lambda: machine())
    date: str = field(default_factory=lambda: dt.date.today().isoformat())
    notes: str = ""
    commit: str = field(default_factory=lambda: code_version())  # the code that was measured
    train_photos: int | None = None  # photos the measured model was trained on, where a trained model is measured

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def code_version() -> str:
    """The commit the benchmarks run at (``git rev-parse``), and ``+dirty.HASH`` when catdog's code differs from it.

    HASH is of ``git diff HEAD -- src``: two runs with the same uncommitted change to catdog's code
    share a version, any other change makes another. ``$CATDOG_BENCH_COMMIT``, where set, names it
    instead: a lent GPU machine's copy of the checkout carries the working tree but a stale ``.git``
    (on 2026-12-04 its HEAD was the session's first commit, with the later ones as changes), so
    benchmarks/gpu_run.sh is told the commit the copy was made from. ``unknown`` outside a git checkout.
    """
    if os.environ.get("CATDOG_BENCH_COMMIT"):
        return os.environ["CATDOG_BENCH_COMMIT"]
    try:
        git = functools.partial(subprocess.run, cwd=REPO, capture_output=True, check=True, timeout=60)
        head = git(["git", "rev-parse", "--short=12", "HEAD"]).stdout.decode().strip()
        diff = git(["git", "diff", "HEAD", "--", "src"]).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty.{hashlib.sha256(diff).hexdigest()[:10]}" if diff else head


def machine() -> str:
    """e.g. 'cpu: 2 cores AMD EPYC ..., 24 GiB' or 'gpu: NVIDIA H100 80GB HBM3 (driver 550.x)'."""
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            driver = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                .stdout.strip()
                .splitlines()
            )
            return f"gpu: {name} x{torch.cuda.device_count()} (driver {driver[0] if driver else '?'})"
    except Exception:
        pass
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"cpu: {os.cpu_count()} cores {cpu}, {mem:.0f} GiB"


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children) in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def say(message: str) -> None:
    """A script's voice for what catdog's feature store tells a run (a damaged feature cache dropped, its features
    computed again: a slower run), the ``say`` training passes it; on stderr, where stdout holds results. The
    store leaves escaping to its reader (training's log escapes it): a cache folder's control characters are
    escaped here, as there."""
    from catdog.fsutil import printable

    print(printable(message), file=sys.stderr, flush=True)


def catdog_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "catdog", *args]


def history(model_dir: Path) -> list[dict]:
    """A training run's epochs, as its model directory's ``metrics.jsonl`` records them."""
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def interleaved_ms(fns: dict, batch, repeats: int, rounds: int = 5) -> dict[str, float]:
    """ms per call of each function, timed in turns: ``rounds`` rounds of ``repeats / rounds`` calls each.

    Each contender's figure is the median of its calls in its best round. The machine is shared:
    timed one after the other, a burst of other jobs' load landed on one contender and swung the
    fp32-vs-PyTorch ratio from 1.7x to 2.9x between runs; in turns, every contender gets the quiet
    moments as well as the busy ones, and the best round is the one least disturbed (as ``timeit``
    reports its minimum). The pause before each turn lets the previous runtime's threads stop spinning
    (a PyTorch call right before each ONNX Runtime call made ONNX Runtime 1.6x slower).
    """
    rounds = min(rounds, repeats)
    medians: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(0.2)
            fn(batch)  # warm-up: first call after the pause
            times = []
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                fn(batch)
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times))
    return {name: 1000 * min(values) for name, values in medians.items()}


def need_dev_data() -> Path:
    if not DEV_DIR.exists():
        raise SystemExit(f"benchmark data not found at {DEV_DIR}; set CATDOG_TEST_DATA")
    return DEV_DIR


def subset(dev: Path, out: Path, per_class: int) -> Path:
    """``per_class`` cats and dogs spread evenly over the dev data's numbering, hard-linked (copied where
    links are impossible) into the new folder ``out``."""
    out.mkdir(parents=True)
    for label in ("cat", "dog"):
        files = sorted(dev.glob(f"{label}.*.jpg"), key=lambda p: int(p.stem.split(".")[1]))
        for path in files[:: max(1, len(files) // per_class)][:per_class]:
            try:
                os.link(path, out / path.name)
            except OSError:
                shutil.copyfile(path, out / path.name)
    return out


# Pictures with no cat or dog in them, bundled with scikit-image and scikit-learn (no download):
# what a `neither` gate should turn away.
NONPET_SKIMAGE = [
    "astronaut", "coffee", "rocket", "camera", "brick", "moon", "clock", "coins", "page", "text",
    "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "gravel", "cell",
    "grass", "horse", "logo", "checkerboard",
]  # fmt: skip


def nonpet_pictures() -> dict:
    """``{name: RGB uint8 array}`` for the 20 scikit-image pictures above and scikit-learn's two photos."""
    import numpy as np
    import skimage.data
    from sklearn.datasets import load_sample_images

    pictures = {}
    for name in NONPET_SKIMAGE:
        pixels = getattr(skimage.data, name)()
        if pixels.dtype == bool:  # a silhouette
            pixels = pixels.astype(np.uint8) * 255
        pixels = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]
        pictures[name] = np.ascontiguousarray(pixels.astype(np.uint8))
    pictures.update(zip(("china", "flower"), load_sample_images().images))
    return pictures


def turned_away(model: str | Path | None, pictures: dict) -> list[str]:
    """Names of the pictures that ``catdog predict`` (built-in model: ``None``) answers `neither`."""
    import io

    from PIL import Image

    from catdog.predict import Predictor

    def png(pixels) -> bytes:
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG")
        return out.getvalue()

    predictor = Predictor.load(None if model is None else str(model))
    answers = predictor.predict_batch([(name, png(pixels)) for name, pixels in pictures.items()], "filename")
    return [a.source for a in answers if a.label == "neither"]


# -- the open-set gate's data: what it may be fitted on, and what is held out for reporting ----------

NEITHER_DIR = DATA / "neither"
WILD_SUBJECTS = ("canid_like", "felid_like")  # foxes, wolves, hyenas; big and wild cats: `neither`, reported apart
NEITHER_SALT = "neither-holdout"  # the neither folder's split is its own: half to fit on, half held out
CALIBRATION_SALT = "gate-calibration"  # a slice of the dev train split that sets the gate's operating point
OPERATING_POINT_SALT = "operating-point"  # the folds that choose a shipped gate's operating point
OPERATING_POINT_FOLDS = 5


def neither_split(hashes: list[str], labels: list[int]) -> dict[str, list[int]]:
    """``{"fit": [...], "held_out": [...]}``: the neither folder halved by content hash, per subject."""
    from catdog.data.split import split_indices

    split = split_indices(hashes, labels, val_fraction=0.5, salt=NEITHER_SALT)
    return {"fit": split["train"], "held_out": split["val"]}


def cross_validated_operating_point(
    pets: torch.Tensor,
    negatives: torch.Tensor,
    mirrors: torch.Tensor,
    calibration: torch.Tensor,
    hashes,
    c: float,
    always: torch.Tensor | None = None,
) -> tuple[float, dict[str, float]]:
    """A shipped gate's operating point, chosen by cross-validation on its fitting data (gate inputs of each).

    ``negatives`` and ``mirrors`` are the fitting half of `neither` and its mirror images, ``hashes`` their
    content hashes (which put each photo in one of ``OPERATING_POINT_FOLDS`` folds); ``always`` are more
    negatives every fold fits on (the synthetic graphics) and none counts. Returns the target
    share of pets turned away and each target's cross-validated share of non-pets answered `neither`.
    """
    import torch

    from catdog.data.split import hash_fraction
    from catdog.models.gate import OPERATING_TARGETS, choose_operating_target, cross_validated_shares

    folds = torch.tensor([int(hash_fraction(h, OPERATING_POINT_SALT) * OPERATING_POINT_FOLDS) for h in hashes])
    return choose_operating_target(
        cross_validated_shares(pets, negatives, mirrors, calibration, folds, c, OPERATING_TARGETS, always)
    )


def operating_point_record(calibration: int, turned_away: float, target: float, shares: dict[str, float]) -> dict:
    """What a shipped gate's record says of its operating point (the ``fitted_on`` entries)."""
    return {
        "operating_point": f"{calibration} dev training photos kept from the fit: {turned_away:.2%} score below "
        f"0.5 (target {target:.1%}, chosen by {OPERATING_POINT_FOLDS}-fold cross-validation on the fitting half of "
        "neither)",
        "operating_target": target,
        "cv_non_pets_answered_neither": shares,
    }


def calibration_slice(train: list[int], hashes: list[str], fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """``(fit, calibration)``: the dev train split's pets, a fifth of them (by content hash) kept from the fit."""
    from catdog.data.split import hash_fraction

    calibration = [i for i in train if hash_fraction(hashes[i], CALIBRATION_SALT) < fraction]
    chosen = set(calibration)
    return [i for i in train if i not in chosen], calibration


def dev_validation(dev_dir: Path = DEV_DIR) -> list[tuple[str, str]]:
    """``(path, label)`` of the dev validation split, as ``catdog train`` holds it out (content hash, 10 %)."""
    return dev_split(dev_dir, "val")


def dev_test(dev_dir: Path = DEV_DIR) -> list[tuple[str, str]]:
    """``(path, label)`` of the dev test split: photos no choice has seen, neither of the built-in model
    (builtin_head.json's ``split``) nor of a recipe trained with ``--test-fraction 0.1``."""
    return dev_split(dev_dir, "test")


def dev_split(dev_dir: Path, part: str) -> list[tuple[str, str]]:
    """``(path, label)`` of ``part`` of the built-in head's content-hash split of the dev photos (10 % each)."""
    from catdog.data.layout import discover
    from catdog.data.split import files_in_part
    from catdog.models.files import builtin_config

    split = builtin_config()["split"]
    dev = discover(dev_dir, image_files_only=True)
    label_of = {str(f.path): f.label for f in dev.files}
    fractions = {"val_fraction": split["val_fraction"], "test_fraction": split["test_fraction"]}
    return list(files_in_part(label_of, dev.classes, part, **fractions).items())


def held_out_neither(folder: Path = NEITHER_DIR) -> dict[str, list[str]]:
    """The held-out half of the neither folder (see :func:`neither_split`), as paths per subject."""
    return neither_halves(folder)["held_out"]


def neither_halves(folder: Path = NEITHER_DIR) -> dict[str, dict[str, list[str]]]:
    """``{"fit": {subject: paths}, "held_out": {subject: paths}}``: the neither folder's two halves."""
    from catdog.data.hashing import HashIndex
    from catdog.data.layout import discover

    others = discover(folder, image_files_only=True)
    paths = [str(f.path) for f in others.files]
    subjects = [others.classes.index(f.label) for f in others.files]
    out: dict[str, dict[str, list[str]]] = {}
    for half, indices in neither_split(HashIndex(None).hashes(paths), subjects).items():
        for i in indices:
            out.setdefault(half, {}).setdefault(others.files[i].label, []).append(paths[i])
    return out
