"""The benchmarks' own decisions: a floor is checked on the figure it names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.bench_abuse import all_served_within


def test_abuse_floor_checks_the_slowest_request_not_the_median() -> None:
    fast = [(200, 0.05)] * 9
    assert all_served_within(fast + [(200, 2.9)], 3)
    assert not all_served_within(fast + [(200, 3.5)], 3)  # one of ten too slow: the floor is missed
    assert not all_served_within(fast + [(503, 0.01)], 3)  # one of ten not served
    assert not all_served_within([], 3)


def row(benchmark: str, figure: str, value: float = 1.0, **extra) -> dict:
    return {"benchmark": benchmark, "figure": figure, "value": value, **extra}


def test_a_rerun_replaces_the_figures_it_measured_and_keeps_the_others_it_did_not() -> None:
    """A rerun of only some recipes (the gpu floors, say) must not silently drop the rows of the others."""
    from benchmarks.__main__ import merge

    earlier = [row("gpu", "floor run: val accuracy", 99.0), row("gpu", "seed 1: val accuracy", 98.9, passed=False)]
    earlier.append(row("serve", "p99", 140.0))
    rows, kept = merge(earlier, "gpu", [row("gpu", "floor run: val accuracy", 99.1)])
    assert row("gpu", "seed 1: val accuracy", 98.9, passed=False) in rows and kept == ["seed 1: val accuracy"]
    assert [r["value"] for r in rows if r["figure"] == "floor run: val accuracy"] == [99.1]
    assert row("serve", "p99", 140.0) in rows and len(rows) == 3


def test_every_recorded_row_names_the_commit_that_made_it() -> None:
    """A row of the benchmark table is made by code at a commit it names, and a trained model's row says on how many
    photos it trained; a figure measured by hand or by code that is gone belongs in the prose, not in results.json."""
    from benchmarks.__main__ import load_results

    rows = load_results()
    without_commit = sorted({f"{r['benchmark']}: {r['figure']}" for r in rows if not r.get("commit")})
    assert not without_commit, f"rows without a commit: {without_commit}"
    trained = [r for r in rows if r["benchmark"] in ("train", "gpu") and ":" in r["figure"]]
    assert all(r.get("train_photos") for r in trained), [r["figure"] for r in trained if not r.get("train_photos")]


def test_a_kept_training_run_is_reused_only_at_the_commit_that_made_it() -> None:
    from benchmarks.bench_train import reusable
    from benchmarks.common import code_version

    made_here = {"wall_seconds": 300.0, "peak_rss_mib": 900, "commit": code_version()}
    assert reusable(made_here)
    assert not reusable({**made_here, "commit": "0123456789ab"})  # another commit's run
    assert not reusable({"wall_seconds": 300.0, "peak_rss_mib": 900})  # a run from before commits were recorded


def finished_run(tmp_path: Path, epochs: list[tuple[float, float]], final: float, wall: float):
    """A model directory as ``catdog train`` leaves it (its metrics.jsonl and config.json), and the Run of it."""
    from benchmarks.bench_train import Run

    out = tmp_path / "model"
    out.mkdir()
    rows = [{"epoch": i + 1, "val_accuracy": acc, "wall_seconds": at} for i, (at, acc) in enumerate(epochs)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"metrics": {"val_accuracy": final, "wall_seconds": epochs[-1][0] + 5}, "data": {"train_images": 900}}
    (out / "config.json").write_text(json.dumps(config))
    return Run("frozen lite0", out, "catdog train DEV ...", wall, 1000.0)


def test_the_time_floor_is_measured_and_can_be_missed(tmp_path: Path) -> None:
    """Time from process start to the accuracy floor (a run stops at its budget: its wall-clock cannot miss)."""
    from benchmarks.bench_train import time_to_accuracy_result

    # The budget's clock starts 10 s after the process (wall 610 = 600 on the clock + 10).
    early = finished_run(tmp_path, [(200.0, 0.975), (400.0, 0.981), (595.0, 0.983)], 0.983, 610.0)
    met = time_to_accuracy_result("train", early, 98.0, 600, "min")
    assert met.passed and met.value == round(410 / 60, 2) and met.notes.endswith("epoch 2")
    missed = time_to_accuracy_result("train", early, 98.2, 600, "min")  # reached at 605 s: over 600
    assert missed.passed is False and missed.value == round(605 / 60, 2)
    never = time_to_accuracy_result("train", early, 99.0, 600, "min")
    assert never.passed is False and math.isnan(never.value) and "no validation reached 99.0 %" in never.notes


def test_the_final_validation_at_the_test_size_counts_at_the_end_of_the_run(tmp_path: Path) -> None:
    from benchmarks.bench_train import time_to_accuracy_result

    run_ = finished_run(tmp_path, [(1000.0, 0.985), (2600.0, 0.988)], 0.991, 2680.0)  # 99.1 % at 288 px
    result = time_to_accuracy_result("train", run_, 99.0, 2700, "min")
    assert result.passed and result.value == round(2680 / 60, 2) and "final validation" in result.notes


def test_the_photos_listed_as_wrong_by_label_are_dev_validation_photos_with_that_label(dev_dir: Path) -> None:
    from benchmarks.bench_neither import label_errors
    from benchmarks.common import dev_validation

    validation = {Path(path).name: label for path, label in dev_validation(dev_dir)}
    listed = label_errors()
    assert len({row["photo"] for row in listed}) == len(listed) > 0
    for row in listed:
        assert validation.get(row["photo"]) == row["labelled"], row["photo"]


def test_a_failed_test_split_evaluation_misses_its_floor_and_keeps_the_other_figures(tmp_path: Path) -> None:
    """``catdog evaluate`` failing on a trained run gives a NaN that fails the floor, with catdog's own sentence."""
    from benchmarks.bench_train import test_accuracy

    run_ = finished_run(tmp_path, [(100.0, 0.98)], 0.98, 110.0)  # no weights in it: evaluate cannot load it
    value, note = test_accuracy(run_, tmp_path)
    assert math.isnan(value) and not value >= 98.0
    assert note.startswith("catdog evaluate failed: ") and "Traceback" not in note and len(note) > 30


def test_runs_brought_back_from_a_gpu_machine_hold_the_tensors_they_trained(tmp_path: Path) -> None:
    """gpu_models packs a fine-tuned model without the tensors that equal the pretrained ones, in parts small
    enough for the GPU machine's 16-MiB files, and unpacking puts every tensor back as it was."""
    import torch
    from safetensors.torch import load_file

    from benchmarks.gpu_models import PART_BYTES, pack, unpack
    from catdog.models import build_model, save_model_dir

    model = build_model("tf_efficientnet_lite0", 2, gate=True).add_pristine_gate(0)
    with torch.no_grad():  # what fine-tuning does: the backbone moves, its pristine copy does not
        for p in model.backbone.blocks.parameters():
            p.add_(0.01)
    runs = tmp_path / "runs"
    run = runs / "gpu-fine-tune-lite0"
    config = {"architecture": "tf_efficientnet_lite0", "classes": ["cat", "dog"], "preprocess": {}}
    save_model_dir(model, config, run)
    (run / "run.json").write_text(json.dumps({"commit": "0123456789ab", "machine": "gpu: test"}))
    (runs / "gpu-fine-tune-lite0.log").write_text("saved\n")

    pack(runs, tmp_path / "parts")
    parts = sorted((tmp_path / "parts").iterdir())
    whole = (run / "model.safetensors").stat().st_size
    assert all(p.stat().st_size <= PART_BYTES for p in parts)
    assert sum(p.stat().st_size for p in parts) < 0.6 * whole  # the pristine copy stayed behind

    unpack(tmp_path / "parts", tmp_path / "back")
    before = load_file(str(run / "model.safetensors"))
    after = load_file(str(tmp_path / "back" / run.name / "model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert (tmp_path / "back" / "gpu-fine-tune-lite0.log").read_text() == "saved\n"
    assert json.loads((tmp_path / "back" / run.name / "run.json").read_text())["machine"] == "gpu: test"


def test_the_commit_a_copy_was_made_from_can_be_named(monkeypatch) -> None:
    """A GPU machine's copy of the checkout has a stale .git: CATDOG_BENCH_COMMIT names the commit instead."""
    from benchmarks.common import code_version

    code_version.cache_clear()
    monkeypatch.setenv("CATDOG_BENCH_COMMIT", "0123456789ab")
    try:
        assert code_version() == "0123456789ab"
    finally:
        code_version.cache_clear()


def test_scripts_and_benchmarks_say_a_damaged_feature_cache_was_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Training says when it drops a damaged feature cache (a slower run: its features are computed again); the
    scripts and benchmarks that read the same cache dropped it without a word. They pass the store their ``say``,
    one line on stderr, wherever they open it."""
    import ast

    import numpy as np

    from benchmarks.common import say
    from catdog.features import FeatureStore

    # A cache folder named with a control character reached the terminal raw (training's log escapes it).
    cache = tmp_path / "cache\x1b[2J"
    damaged = FeatureStore(cache, "lite0")
    damaged.file.write_bytes(np.zeros((3, 1), dtype=np.float32).tobytes())
    damaged.index_file.write_text(json.dumps({"dim": 1, "rows": {"a:0": 1, "b:0": 2}}))  # skips row 0
    FeatureStore(cache, "lite0", say=say)
    escaped = str(damaged.dir).replace("\x1b", "\\x1b")
    assert capsys.readouterr().err == (
        f"the feature cache '{escaped}' was dropped, its index skips or repeats a row (written by catdog before "
        "2026-12-07); its features are computed again\n"
    )

    root = Path(__file__).resolve().parents[1]
    opened = {"pretrained_features", "pretrained_gate_inputs", "FeatureStore"}  # say: the 7th argument, or by name
    calls = [
        (path.relative_to(root), node)
        for path in sorted([*root.glob("benchmarks/*.py"), *root.glob("scripts/*.py")])
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in opened
    ]
    assert len(calls) >= 5
    silent = [
        f"{path}:{node.lineno}"
        for path, node in calls
        if not any(keyword.arg == "say" for keyword in node.keywords)
        and not (getattr(node.func, "id", "") != "FeatureStore" and len(node.args) >= 7)
    ]
    assert not silent, silent
