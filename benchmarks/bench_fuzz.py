"""Long fuzz of decode (≥ 100,000 mutated images) and of the upload endpoint of a real server.

Decode: the mutation fuzzer of ``tests/hostile.py`` (real JPEG/PNG/WebP/GIF/BMP/TIFF files with
bit flips, boundary values, cuts, copies and splices) in one process per core, each capped at
1 GiB of address space. Every input must decode to RGB or raise ``ImageError``; any other
exception, any input over 2 s, and any decode that runs out of memory is a crash.

Upload: mutated photos posted to ``catdog serve`` (multipart, raw bodies and batches); any 5xx
is a crash, and the server's RSS is read before and after.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import REPO, Result

TESTS = REPO / "tests"
COMMAND = "python -m benchmarks fuzz"


def fuzz_decode(total: int, processes: int) -> dict:
    """``total`` inputs split over ``processes`` capped subprocesses (distinct seeds); merged stats."""
    share = -(-total // processes)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(TESTS / "hostile.py"), str(share), str(1000 + i), "1024"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # libtiff prints its warnings straight to stderr
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    merged = {"tried": 0, "decoded": 0, "refused": 0, "crashes": [], "slow": [], "max_seconds": 0.0, "peak_rss_mib": 0}
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            merged["crashes"].append(f"fuzz process exited with {proc.returncode}")
            continue
        stats = json.loads(out)
        for key in ("tried", "decoded", "refused"):
            merged[key] += stats[key]
        merged["crashes"] += stats["crashes"]
        merged["slow"] += stats["slow"]
        merged["max_seconds"] = max(merged["max_seconds"], stats["max_seconds"])
        merged["peak_rss_mib"] = max(merged["peak_rss_mib"], stats["peak_rss_mib"])
    return merged


def fuzz_uploads(count: int) -> dict:
    """``count`` mutated uploads to a real server: 5xx answers, server RSS before and after."""
    import httpx

    sys.path.insert(0, str(TESTS))
    from hostile import fuzz_seeds, mutate, vm_rss_mib
    from serving import Server

    rng = random.Random(7)
    seeds = fuzz_seeds()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(log=Path(tmp) / "server.log")
        try:
            server.wait()
            with httpx.Client(base_url=server.url, timeout=60) as client:
                before = vm_rss_mib(server.proc.pid)

                def post(i: int) -> int:
                    data = mutate(rng.choice(seeds), random.Random(i), seeds)
                    if i % 3 == 0:
                        return client.post("/api/v1/predict", content=data).status_code
                    if i % 3 == 1:
                        return client.post("/api/v1/predict", files={"file": (f"f{i}.jpg", data)}).status_code
                    files = [("files", (f"f{i}-{k}.jpg", mutate(data, random.Random(i + k)))) for k in range(4)]
                    return client.post("/api/v1/predict/batch", files=files).status_code

                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=8) as pool:
                    statuses = list(pool.map(post, range(count)))
                seconds = time.perf_counter() - started
                healthy = client.get("/healthz").status_code == 200
                after = vm_rss_mib(server.proc.pid)
        finally:
            server.stop()
        tracebacks = server.log().count("Traceback")
    return {
        "requests": count,
        "server_errors": sum(s >= 500 for s in statuses),
        "requests_per_s": count / seconds,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "healthy": healthy,
        "tracebacks": tracebacks,
    }


def run(quick: bool) -> list[Result]:
    total = 4_000 if quick else 100_000
    uploads = 200 if quick else 3_000
    processes = max(1, min(os.cpu_count() or 1, 4))
    started = time.perf_counter()
    decode = fuzz_decode(total, processes)
    decode_s = time.perf_counter() - started
    up = fuzz_uploads(uploads)
    command = COMMAND + (" --quick" if quick else "")
    crashes = len(decode["crashes"]) + len(decode["slow"])
    notes = "; ".join((decode["crashes"] + decode["slow"])[:3])
    return [
        Result("fuzz", "decode: inputs tried", decode["tried"], "inputs", command, ">= 100000",
               None if quick else decode["tried"] >= 100_000,
               notes=f"{decode['decoded']} decoded, {decode['refused']} refused, {decode_s:.0f} s, {processes} procs"),
        Result("fuzz", "decode: crashes and hangs", crashes, "inputs", command, "0", crashes == 0, notes=notes),
        Result("fuzz", "decode: slowest input", decode["max_seconds"] * 1000, "ms", command, "<= 2000 ms",
               decode["max_seconds"] <= 2.0),
        Result("fuzz", "decode: peak RSS per process", decode["peak_rss_mib"], "MiB", command, "<= 1024 MiB",
               decode["peak_rss_mib"] <= 1024),
        Result("fuzz", "upload: 5xx answers", up["server_errors"], "requests", command, "0",
               up["server_errors"] == 0 and up["healthy"] and up["tracebacks"] == 0,
               notes=f"{up['requests']} mutated uploads at {up['requests_per_s']:.0f}/s; "
                     f"{up['tracebacks']} tracebacks logged; /healthz {'200' if up['healthy'] else 'failed'}"),
        Result("fuzz", "upload: server RSS growth", up["rss_after_mib"] - up["rss_before_mib"], "MiB", command, "",
               notes=f"{up['rss_before_mib']:.0f} → {up['rss_after_mib']:.0f} MiB"),
    ]  # fmt: skip


if __name__ == "__main__":
    for result in run("--quick" in sys.argv):
        print(json.dumps(result.to_dict()))
