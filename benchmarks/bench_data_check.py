"""`catdog data check` on the 23,000-image dev set: first run (empty cache) and cached rerun.

Floor: each under 60 s on the 2-core machine. Times are of the real command line in a
subprocess (interpreter start and imports included). "Cold" means catdog's cache is empty; the
operating system's file cache is whatever it is. Quick mode checks a 3,000-image subset.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result, catdog_cmd, need_dev_data, subset

QUICK_IMAGES = 3000


def _timed_check(folder: Path, cache: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(
        catdog_cmd("data", "check", str(folder), "--json", "--cache-dir", str(cache)), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"catdog data check failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)


def run(quick: bool) -> list[Result]:
    dev = need_dev_data()
    with tempfile.TemporaryDirectory(prefix="catdog-bench-check-") as tmp:
        folder = subset(dev, Path(tmp) / "subset", QUICK_IMAGES // 2) if quick else dev
        cache = Path(tmp) / "cache"
        cold, report = _timed_check(folder, cache)
        warm, _ = _timed_check(folder, cache)

    near = report["near_duplicates"]
    examples = "; ".join(f"{' ~ '.join(g['files'])} ({g['distance']} bits)" for g in near[:5])
    notes = (
        f"{report['files']} files: {len(report['unusable'])} unusable, {len(report['duplicates'])} exact duplicate "
        f"groups, {len(near)} near-duplicate groups (<= {report['near_distance']} bits; e.g. {examples}), "
        f"{len(report['label_conflicts'])} label conflicts, {len(report['extension_mismatches'])} wrong extensions, "
        f"{len(report['unusual_modes'])} unusual modes, {len(report['tiny_images'])} tiny images"
    )
    command = "catdog data check ../shared/data/dogs-vs-cats/train --json"
    results = []
    for figure, seconds in (("first run, empty cache", cold), ("rerun, cached", warm)):
        results.append(
            Result(
                benchmark="data_check",
                figure=f"data check {report['files']} images, {figure}",
                value=round(seconds, 1),
                unit="s",
                command=command,
                floor="< 60 s",
                passed=None if quick else seconds < 60,
                notes=notes,
            )
        )
    return results
