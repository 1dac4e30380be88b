"""Fuzzing decode and the upload endpoint with real JPEG/PNG/WebP/GIF/BMP/TIFF files, mutated.

The short runs live here; ``benchmarks/bench_fuzz.py`` runs ≥ 100,000 inputs. Every input must
decode to RGB or raise :class:`catdog.images.ImageError` (never anything else), within 2 s, in a
process capped at 1 GiB of address space; the server must never answer 5xx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog.images import ImageError, decode

from hostile import INTERESTING, fuzz_seeds, one_sentence, shared_server, unhandled_errors

HERE = Path(__file__).parent
SEEDS = fuzz_seeds()
# A fixed seed keeps CI reproducible; set CATDOG_FUZZ_SEED to explore other inputs.
FUZZ_SEED = int(os.environ.get("CATDOG_FUZZ_SEED", "20240607"))


def test_decode_fuzz_in_a_capped_process() -> None:
    """2,000 mutated images in a subprocess limited to 1 GiB of address space."""
    done = subprocess.run(
        [sys.executable, str(HERE / "hostile.py"), "2000", str(FUZZ_SEED), "1024"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads(done.stdout)
    assert stats["tried"] == 2000
    assert stats["crashes"] == [], stats["crashes"][:10]
    assert stats["slow"] == [], stats["slow"]
    # Mutations must not all be refused at the header, or the fuzz only tests the sniffing.
    assert stats["decoded"] > 100 and stats["refused"] > 100, stats


# Edits hypothesis chooses (and shrinks): (position as a fraction of the length, kind, value).
EDITS = st.lists(
    st.tuples(st.floats(0, 1), st.sampled_from(["set", "flip", "cut", "insert", "delete"]), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def apply_edits(data: bytes, edits: list[tuple[float, str, int]]) -> bytes:
    out = bytearray(data)
    for where, kind, value in edits:
        pos = min(int(where * len(out)), max(len(out) - 1, 0))
        if kind == "set" and out:
            out[pos] = INTERESTING[value % len(INTERESTING)]
        elif kind == "flip" and out:
            out[pos] ^= 1 << (value % 8)
        elif kind == "cut":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = bytes([value]) * (value % 17 + 1)
        elif kind == "delete":
            del out[pos : pos + value + 1]
    return bytes(out)


@settings(max_examples=300, deadline=timedelta(seconds=2), derandomize=True)
@given(seed=st.sampled_from(range(len(SEEDS))), edits=EDITS)
def test_decode_never_raises_anything_but_image_error(seed: int, edits) -> None:
    data = apply_edits(SEEDS[seed], edits)
    try:
        img = decode(data)
    except ImageError as err:
        assert one_sentence(str(err)), str(err)
        return
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1


# -- the upload endpoint ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(request: pytest.FixtureRequest):
    srv = shared_server(request)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c
    assert not unhandled_errors(srv.log()), srv.log()[-5000:]


NAMES = st.text(min_size=0, max_size=40).filter(lambda s: "\x00" not in s)
CONTENT_TYPES = st.sampled_from(
    ["image/jpeg", "image/png", "application/octet-stream", "text/html", "", "multipart/form-data", "image/*; q=x"]
)


def body_of(seed: int, edits) -> bytes:
    return apply_edits(SEEDS[seed], edits) if edits else SEEDS[seed]


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    how=st.sampled_from(["multipart", "raw", "batch", "broken-multipart"]),
    seed=st.sampled_from(range(len(SEEDS))),
    edits=st.one_of(st.just([]), EDITS),
    name=NAMES,
    content_type=CONTENT_TYPES,
    extra=st.integers(0, 3),
)
def test_upload_endpoint_never_answers_5xx(client: httpx.Client, how, seed, edits, name, content_type, extra) -> None:
    data = body_of(seed, edits)
    if how == "multipart":
        answer = client.post("/api/v1/predict", files={"file": (name, data, content_type or None)})
    elif how == "raw":
        answer = client.post("/api/v1/predict", content=data, headers={"content-type": content_type})
    elif how == "batch":
        files = [("files", (f"{name}{i}", body_of((seed + i) % len(SEEDS), edits))) for i in range(extra + 1)]
        answer = client.post("/api/v1/predict/batch", files=files)
    else:  # a multipart body cut short or with a lying boundary
        boundary = "b0und4ry"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode("utf-8", "replace") + data[: len(data) // (extra + 1)]
        if extra % 2:
            body += f"\r\n--{boundary}--\r\n".encode()
        header = f"multipart/form-data; boundary={boundary if extra < 2 else 'other'}"
        answer = client.post("/api/v1/predict", content=body, headers={"content-type": header})
    assert answer.status_code < 500, (how, answer.status_code, answer.text)
    if answer.status_code >= 400:
        message = answer.json()["error"]
        assert isinstance(message, str) and "Traceback" not in message and "\n" not in message, message
    else:
        entries = answer.json() if how == "batch" else [answer.json()]
        for entry in entries:
            assert "label" in entry or ("error" in entry and one_sentence(entry["error"])), entry


def test_server_still_healthy_after_fuzz(client: httpx.Client) -> None:
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert time.monotonic() - started < 10
