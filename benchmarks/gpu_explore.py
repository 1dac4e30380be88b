"""The Lite0 fine-tune's neighbour recipes side by side on one GPU: ``python -m benchmarks.gpu_explore DATA OUT``.

Every ``gpu fine-tune lite0 ...`` recipe of bench_gpu that has the floors is trained at once, each a
real ``catdog train`` process, for a fixed number of epochs (not a time budget: processes sharing a
GPU run slower, and the accuracy must not depend on that) with a short warm-up, as under the
60-second budget. They share one pixel cache (the first to take its lock decodes the photos).
Writes ``OUT/explore.json`` (each recipe's validation accuracy and loss per epoch, and its saved
model's) and prints the recipe whose saved model scores best. Other seeds of the floor's recipe
train beside them to show the spread of one draw, and are never picked. The best one's accuracy is
one draw on the validation photos, picked among several: the timed run that follows (bench_gpu) is
the figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_gpu import RUNS
from benchmarks.bench_train import run_dir
from benchmarks.common import catdog_cmd, history


def candidates() -> list[tuple[str, str]]:
    return [(name, options) for name, options, _, floor, _ in RUNS if name.startswith("gpu fine-tune lite0") and floor]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_explore", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=5, help="what the 60-second budget trains (5 epochs in 48 s)")
    parser.add_argument("--warmup-epochs", type=float, default=0.15, help="the budget's warm-up: a twentieth of it")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    started = time.monotonic()
    children = {}
    for name, options in candidates():
        out = run_dir(args.out, name)
        command = catdog_cmd(
            "train", str(args.data), "--out", str(out), *options.split(), "--epochs", str(args.epochs),
            "--warmup-epochs", str(args.warmup_epochs), "--cache-dir", str(cache), "--overwrite",
        )  # fmt: skip
        log = open(args.out / f"{out.name}.log", "w")  # noqa: SIM115 - closed when the child ends
        children[name] = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log), out, log, options)
    rows = []
    for name, (child, out, log, options) in children.items():
        code = child.wait()
        log.close()
        row = {"name": name, "options": options, "exit_code": code}
        if code == 0:
            metrics = json.loads((out / "config.json").read_text())["metrics"]
            row.update(
                val_accuracy=metrics["val_accuracy"],
                val_loss=metrics["val_loss"],
                best_epoch=metrics["best_epoch"],
                epochs=[(r["val_accuracy"], r["val_loss"]) for r in history(out)],
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "epochs": args.epochs,
        "warmup_epochs": args.warmup_epochs,
        "seconds": round(time.monotonic() - started, 1),
        "runs": rows,
    }
    (args.out / "explore.json").write_text(json.dumps(report, indent=2) + "\n")
    done = [r for r in rows if r["exit_code"] == 0]
    if not done:
        print("every recipe failed: see the logs", file=sys.stderr)
        return 1
    # The other seeds of a recipe measure its spread: a lucky seed is not a better recipe.
    recipes = [r for r in done if " seed " not in r["name"]]
    best = max(recipes or done, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    print(f"best: {best['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
