"""A from-scratch net given a `neither` folder: catnet at 96 px learns it as a third class in 15 minutes.

A from-scratch net has no ImageNet backbone for catdog's open-set gate to read, so ``catdog train`` makes
the data's `neither` folder one more class (catdog.models.gate.LearntNeither). The training data is the
23,000 dev photos (``cat/``, ``dog/``) and the fitting half of ``shared/data/neither`` (``neither/``),
hard-linked into one folder; the content-hash split keeps the dev validation and test photos where every
other recipe has them, and ``--test-fraction 0.1`` holds the test split out. It is measured as
bench_neither measures every model, on photos no choice saw: the held-out half of the neither folder and the
dev validation and test pets. The same recipe without the folder (bench_train's ``catnet 96px``) answers
cat or dog for every photo. Quick mode: 1,000 dev photos, 1 minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.bench_neither import held_out_photos, measure, rows_for
from benchmarks.common import DEV_DIR, Result, catdog_cmd, need_dev_data, neither_halves, subset

RECIPE = ["--model", "catnet", "--image-size", "96", "--test-fraction", "0.1"]
BUDGET_MINUTES = {False: 15, True: 1}  # full, quick
NAME = "catnet 96px with a neither folder (15 min)"
COMMAND = "catdog train DEV+NEITHER --out MODEL --model catnet --image-size 96 --test-fraction 0.1 --time-budget 15"


def link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def training_data(out: Path, quick: bool) -> Path:
    """``out/{cat,dog}`` (the dev photos) and ``out/neither`` (the neither folder's fitting half)."""
    pets = subset(DEV_DIR, out / "flat", 500) if quick else DEV_DIR
    for photo in pets.glob("*.jpg"):
        label = photo.name.split(".")[0]
        (out / label).mkdir(parents=True, exist_ok=True)
        link(photo, out / label / photo.name)
    shutil.rmtree(out / "flat", ignore_errors=True)
    (out / "neither").mkdir()
    for subject, paths in neither_halves()["fit"].items():
        for path in map(Path, paths):
            link(path, out / "neither" / f"{subject}-{path.name}")
    return out


def run(quick: bool) -> list[Result]:
    from catdog.models import read_config
    from catdog.predict import Predictor

    need_dev_data()
    with tempfile.TemporaryDirectory() as tmp:
        data = training_data(Path(tmp) / "data", quick)
        out = Path(tmp) / "model"
        budget = str(BUDGET_MINUTES[quick])
        subprocess.run(catdog_cmd("train", str(data), "--out", str(out), *RECIPE, "--time-budget", budget), check=True)
        gate = read_config(out)["gate"]
        figures = measure(Predictor.load(out, throughput=True), held_out_photos(quick))
    rows = rows_for(NAME, figures, COMMAND, floors=False)
    rows[0].notes += (
        f"; on training's own validation split, {gate['val_neither_answered']:.1%} of {gate['val_neither']} neither "
        f"photos answered neither and {gate['val_pets_turned_away']:.2%} of {gate['val_pets']} pets turned away"
    )
    return rows
