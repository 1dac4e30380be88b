"""A real ``catdog serve`` on 127.0.0.1 under abuse: oversized bodies, many connections, slow and vanishing clients.

Figures: how each abuse is answered, the latency of a well-behaved client meanwhile, the server's
RSS before and after, and unhandled exceptions in its log. Limits: 1 MB photos, 3 s per request,
32 requests at once (the rest are answered 503 "busy").
"""

from __future__ import annotations

import io
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import REPO, SAMPLES_DIR, Result

COMMAND = "python -m benchmarks abuse"
TIMEOUT_S = 3


def photo() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.open(SAMPLES_DIR / "dog" / "dog.1.jpg").convert("RGB").resize((320, 240)).save(out, "JPEG")
    return out.getvalue()


def post(url: str, data: bytes) -> tuple[int, float]:
    import httpx

    started = time.perf_counter()
    code = httpx.post(url + "/api/v1/predict", content=data, headers={"content-type": "image/jpeg"}, timeout=120)
    return code.status_code, time.perf_counter() - started


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=60)


def head(length: int) -> bytes:
    lines = ["POST /api/v1/predict HTTP/1.1", "Host: x", "Content-Type: image/jpeg", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status(sock: socket.socket) -> int:
    try:
        first = sock.recv(4096)
    except OSError:
        return 0
    return int(first.split(b" ", 2)[1]) if first.startswith(b"HTTP/") else 0


def oversized(url: str, count: int) -> dict:
    big = b"\xff\xd8\xff" + b"\x00" * (3 * 2**20)

    def one(_: int) -> int:
        with connect(url) as sock:
            sock.sendall(head(len(big)) + big[:65536])
            return status(sock)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(one, range(count)))
    return {"n": count, "413": codes.count(413), "per_s": count / (time.perf_counter() - started)}


def concurrent(url: str, data: bytes, count: int) -> dict:
    with ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(lambda _: post(url, data), range(count)))
    codes = [c for c, _ in answers]
    served = sorted(s for c, s in answers if c == 200)
    return {
        "n": count,
        "200": codes.count(200),
        "503": codes.count(503),
        "other": sum(c not in (200, 503) for c in codes),
        "p50_ms": 1000 * statistics.median(served) if served else float("nan"),
    }


def slow_clients(url: str, data: bytes, count: int) -> dict:
    """``count`` clients trickle a byte every 0.2 s; a normal client's latency meanwhile."""
    stop = threading.Event()

    def trickle() -> None:
        try:
            with connect(url) as sock:
                sock.sendall(head(50_000))
                while not stop.is_set():
                    sock.sendall(b"\xff")
                    time.sleep(0.2)
        except OSError:
            pass  # the server hung up after its timeout: expected

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    served = [post(url, data) for _ in range(10)]
    stop.set()
    for t in threads:
        t.join(timeout=30)
    ok = [s for c, s in served if c == 200]
    return {
        "n": count,
        "served": len(ok),
        "p50_ms": 1000 * statistics.median(ok) if ok else float("nan"),
        "max_ms": 1000 * max(s for _, s in served),
        "passed": all_served_within(served, TIMEOUT_S),
    }


def all_served_within(answers: list[tuple[int, float]], limit_s: float) -> bool:
    """Every request answered 200, the slowest of them within ``limit_s`` seconds."""
    return bool(answers) and all(code == 200 and seconds < limit_s for code, seconds in answers)


def vanishing(url: str, data: bytes, count: int) -> None:
    for _ in range(count):
        with connect(url) as sock:
            sock.sendall(head(len(data)) + data[: len(data) // 2])


def batch_memory(n_batches: int, log: Path) -> tuple[float, float, int]:
    """The server's resident memory before and at its peak while ``n_batches`` batches of 32 large JPEGs arrive
    at once (noise, 2,800 px a side: decoded and answered, so the bytes wait for the model too), and their size."""
    import asyncio

    import httpx
    import numpy as np
    from PIL import Image

    from hostile import vm_rss_mib
    from serving import Server

    noise = np.random.default_rng(0).integers(0, 256, (2800, 2800, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=88)
    photo = buffer.getvalue()

    async def batches(url: str) -> list[int]:
        files = [("files", (f"r{i}.jpg", photo)) for i in range(32)]
        async with httpx.AsyncClient(timeout=120) as client:
            answers = await asyncio.gather(
                *(client.post(url + "/api/v1/predict/batch", files=files) for _ in range(n_batches))
            )
        return [a.status_code for a in answers]

    server = Server(log=log)  # the default limits: 32 photos of 10 MB in a batch
    try:
        server.wait()
        before = vm_rss_mib(server.proc.pid)
        assert set(asyncio.run(batches(server.url))) == {200}
        return before, vm_rss_mib(server.proc.pid, "VmHWM"), len(photo)
    finally:
        server.stop()


def run(quick: bool) -> list[Result]:
    import httpx

    sys.path.insert(0, str(REPO / "tests"))
    from hostile import unhandled_errors, vm_rss_mib
    from serving import Server

    n_big, n_conn, n_slow, n_gone = (100, 50, 10, 50) if quick else (1000, 200, 50, 500)
    data = photo()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server("--max-file-mb", "1", "--timeout", str(TIMEOUT_S), "--max-concurrent", "32",
                        log=Path(tmp) / "server.log")  # fmt: skip
        try:
            server.wait()
            with ThreadPoolExecutor(max_workers=32) as pool:  # warm-up: buffers for the largest batch
                list(pool.map(lambda _: post(server.url, data), range(64)))
            rss_start = vm_rss_mib(server.proc.pid)
            big = oversized(server.url, n_big)
            rss_big = vm_rss_mib(server.proc.pid)
            conn = concurrent(server.url, data, n_conn)
            slow = slow_clients(server.url, data, n_slow)
            vanishing(server.url, data, n_gone)
            time.sleep(TIMEOUT_S)
            healthy = httpx.get(server.url + "/healthz", timeout=30).status_code == 200
            alone = post(server.url, data)
            rss_end = vm_rss_mib(server.proc.pid)
        finally:
            server.stop()
        errors = len(unhandled_errors(server.log()))
        n_batches = 3
        batch_before, batch_peak, photo_bytes = batch_memory(n_batches, Path(tmp) / "batch.log")
    command = COMMAND + (" --quick" if quick else "")
    return [
        Result("abuse", f"{n_big} oversized bodies answered 413", big["413"], "requests", command, f"{n_big}",
               big["413"] == n_big, notes=f"{big['per_s']:.0f}/s; server RSS {rss_start:.0f} → {rss_big:.0f} MiB"),
        Result("abuse", f"{n_conn} concurrent clients: 5xx other than 503", conn["other"], "requests", command, "0",
               conn["other"] == 0,
               notes=f"{conn['200']} served (p50 {conn['p50_ms']:.0f} ms), {conn['503']} told 'busy' (limit 32)"),
        Result("abuse", f"well-behaved client during {n_slow} slow uploads: slowest of 10", slow["max_ms"], "ms",
               command, f"10/10 served within {TIMEOUT_S} s", slow["passed"],
               notes=f"{slow['served']}/10 served, p50 {slow['p50_ms']:.0f} ms"),
        Result("abuse", "unhandled exceptions logged", errors, "lines", command, "0",
               errors == 0 and healthy and alone[0] == 200,
               notes=f"after {n_gone} clients vanished mid-upload; /healthz {'200' if healthy else 'failed'}"),
        Result("abuse", "server RSS growth over the whole run", rss_end - rss_start, "MiB", command, "",
               notes=f"{rss_start:.0f} → {rss_end:.0f} MiB after warm-up"),
        Result("abuse", f"{n_batches} batches of 32 photos of {photo_bytes / 1e6:.1f} MB at once: peak RSS growth",
               batch_peak - batch_before, "MiB", command, "",
               notes=f"{batch_before:.0f} → {batch_peak:.0f} MiB at the peak, default limits"),
    ]  # fmt: skip


if __name__ == "__main__":
    import json

    for result in run("--quick" in sys.argv):
        print(json.dumps(result.to_dict()))
