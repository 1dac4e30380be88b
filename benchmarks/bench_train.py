"""Training floors of issue 3: accuracy within a time budget, training images/s, peak memory.

Each run is the real ``catdog train`` in a subprocess with a cold cache (a fresh cache folder),
timed from the outside; peak RSS is the child's (``RUSAGE_CHILDREN`` grows to the largest
child so far, so runs go from the smallest to the largest expected footprint).

Full mode (the README's numbers; about 85 minutes on a 2-core CPU):
- frozen EfficientNet-Lite0 head, ``--time-budget 10``: ≥ 98.0 % val accuracy, ≤ 10.5 min wall-clock;
- seed-cnn and catnet, ``--time-budget 15`` each at 128 px: catnet beats seed-cnn;
- fine-tuning EfficientNet-Lite0, ``--time-budget 45``: ≥ 99.0 %.
Quick mode runs the same commands on 1,000 dev photos with 1–2 minute budgets (it checks
that everything works, not the floors).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result, catdog_cmd, need_dev_data, peak_rss_mib

RUNS = [
    # name, catdog train options, full budget (min), quick budget (min), accuracy floor (%)
    ("frozen lite0", ["--model", "tf_efficientnet_lite0", "--freeze", "backbone"], 10, 2, 98.0),
    ("seed-cnn 128px", ["--model", "seed-cnn", "--image-size", "128"], 15, 1, None),
    ("catnet 128px", ["--model", "catnet", "--image-size", "128"], 15, 1, None),
    ("fine-tune lite0", ["--model", "tf_efficientnet_lite0"], 45, 2, 99.0),
]


def subset(dev: Path, out: Path, per_class: int) -> Path:
    out.mkdir(parents=True)
    for label in ("cat", "dog"):
        for path in sorted(dev.glob(f"{label}.*.jpg"))[:per_class]:
            shutil.copy(path, out / path.name)  # copies: dataset discovery does not follow links
    return out


def run(quick: bool) -> list[Result]:
    dev = need_dev_data()
    results: list[Result] = []
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = subset(dev, Path(tmp) / "subset", 500) if quick else dev
        # CATDOG_BENCH_TRAIN_RUNS="frozen lite0,catnet 128px" runs only those recipes.
        chosen = [n.strip() for n in os.environ.get("CATDOG_BENCH_TRAIN_RUNS", "").split(",") if n.strip()]
        for name, options, full_budget, quick_budget, floor in RUNS:
            if chosen and name not in chosen:
                continue
            budget = quick_budget if quick else full_budget
            out, cache = Path(tmp) / name.replace(" ", "-"), Path(tmp) / "cache" / name.replace(" ", "-")
            args = ["train", str(data), "--out", str(out), *options, "--time-budget", str(budget)]
            args += ["--cache-dir", str(cache)]
            command = "catdog " + " ".join(a if a != str(data) else "DEV" for a in args)
            command = command.replace(f" --cache-dir {cache}", "").replace(f" --out {out}", " --out MODEL")
            start = time.perf_counter()
            done = subprocess.run(catdog_cmd(*args), capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{command} failed: {done.stderr[-2000:]}")
            metrics = json.loads((out / "config.json").read_text())["metrics"]
            acc = 100 * metrics["val_accuracy"]
            accuracy[name] = acc
            floor_text = f">= {floor} %" if floor and not quick else ""
            results += [
                Result("train", f"{name}: val accuracy", round(acc, 2), "%", command, floor_text,
                       passed=(acc >= floor) if floor_text else None),
                Result("train", f"{name}: wall-clock", round(wall / 60, 2), "min", command,
                       f"<= {full_budget + 0.5} min" if not quick else "",
                       passed=(wall / 60 <= full_budget + 0.5) if not quick else None),
                Result("train", f"{name}: training images/s", metrics["train_images_per_s"], "images/s", command),
                Result("train", f"{name}: peak RSS", round(peak_rss_mib(children=True)), "MiB", command,
                       notes="largest child process so far"),
            ]  # fmt: skip
            shutil.rmtree(cache, ignore_errors=True)
    if "catnet 128px" in accuracy and "seed-cnn 128px" in accuracy:
        results.append(
            Result(
                "train", "catnet minus seed-cnn (same budget)",
                round(accuracy["catnet 128px"] - accuracy["seed-cnn 128px"], 2), "points", "see the two runs above",
                "> 0" if not quick else "",
                passed=accuracy["catnet 128px"] > accuracy["seed-cnn 128px"] if not quick else None,
            )
        )  # fmt: skip
    return results
