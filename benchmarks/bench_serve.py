"""Web service under load: 16 concurrent clients posting ~500x400 JPEGs, and one client alone.

The server is a real ``catdog serve`` (built-in model) in its own process; the load generator
is another process (httpx, one thread per client), both on this machine, as the floors are stated.
``python -m benchmarks.bench_serve --load URL ...`` is that generator.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, SAMPLES_DIR, Result, catdog_cmd

SIZE = (500, 400)


def make_jpegs(out_dir: Path) -> list[Path]:
    """Real photos (the samples) cropped and resized to 500x400, re-encoded as quality-90 JPEGs."""
    from PIL import Image, ImageOps

    photos = sorted(SAMPLES_DIR.glob("*/*.jpg"))
    if not photos:
        raise SystemExit(f"benchmark photos not found at {SAMPLES_DIR}; set CATDOG_TEST_DATA")
    paths = []
    for photo in photos:
        img = ImageOps.fit(ImageOps.exif_transpose(Image.open(photo)).convert("RGB"), SIZE, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        path = out_dir / f"{photo.parent.name}-{photo.stem}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        catdog_cmd("serve", "--port", str(port)), cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"catdog serve exited: {log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"catdog serve was not ready within 300 s: {log.read_text()}")


def load(url: str, images: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` threads, each posting photos back to back for ``seconds``; latencies of the 200s."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            n = i
            while time.perf_counter() < stop:
                data = images[n % len(images)]
                n += clients
                start = time.perf_counter()
                try:
                    response = http.post("/api/v1/predict", content=data, headers={"content-type": "image/jpeg"})
                    ok = response.status_code == 200 and "label" in response.json()
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies[i].append(time.perf_counter() - start)
                else:
                    errors[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    all_latencies = np.array([x for per in latencies for x in per]) * 1000
    return {
        "clients": clients,
        "seconds": elapsed,
        "ok": int(all_latencies.size),
        "errors": sum(errors),
        "images_per_s": all_latencies.size / elapsed,
        "p50_ms": float(np.percentile(all_latencies, 50)) if all_latencies.size else float("nan"),
        "p99_ms": float(np.percentile(all_latencies, 99)) if all_latencies.size else float("nan"),
    }


def _load_in_process(url: str, image_dir: Path, clients: int, seconds: float) -> dict:
    """Run :func:`load` in a separate process, so that the client's Python does not share the server's GIL."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_serve", "--load", url, "--images", str(image_dir),
         "--clients", str(clients), "--seconds", str(seconds)],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=seconds + 120,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[Result]:
    seconds_many, seconds_one = (10, 5) if quick else (60, 20)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        image_dir = tmp_dir / "photos"
        image_dir.mkdir()
        make_jpegs(image_dir)
        proc, url = _start_server(tmp_dir / "server.log")
        try:
            _load_in_process(url, image_dir, 4, 2)  # warm-up: thread pools, first batches
            one = _load_in_process(url, image_dir, 1, seconds_one)
            many = _load_in_process(url, image_dir, 16, seconds_many)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    command = "python -m benchmarks serve" + (" --quick" if quick else "")
    notes = f"built-in model, {SIZE[0]}x{SIZE[1]} JPEGs, client on the same machine; {many['seconds']:.0f} s of load"
    return [
        Result("serve", "16 clients: throughput", many["images_per_s"], "images/s", command, ">= 60 images/s",
               many["images_per_s"] >= 60, notes=notes),
        Result("serve", "16 clients: errors", many["errors"], "errors", command, "0", many["errors"] == 0,
               notes=f"{many['ok']} requests answered"),
        Result("serve", "16 clients: p99 latency", many["p99_ms"], "ms", command, "<= 500 ms", many["p99_ms"] <= 500,
               notes=f"p50 {many['p50_ms']:.0f} ms"),
        Result("serve", "1 client: p50 latency", one["p50_ms"], "ms", command, "<= 40 ms", one["p50_ms"] <= 40,
               notes=f"{one['images_per_s']:.1f} images/s, p99 {one['p99_ms']:.0f} ms"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="The load generator of the serve benchmark.")
    parser.add_argument("--load", required=True, help="server URL")
    parser.add_argument("--images", required=True, type=Path, help="folder of JPEGs to post")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))]
    print(json.dumps(load(args.load, images, args.clients, args.seconds)))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
