"""A corpus of hostile and awkward inputs, made on the fly (nothing is committed).

Each :class:`Case` is a file name, its bytes and what catdog must do with it:

- ``"error"``: refuse it with one :class:`catdog.images.ImageError` sentence;
- ``"ok"``: decode it to an RGB image (odd but legitimate photos: CMYK, 16-bit, bogus EXIF ...);
- ``"either"``: a truncation so close to the end that the decoder may or may not notice;
  either outcome is fine as long as it is one of the two.

Used by the hostile-input, fuzz and abuse tests and by the benchmarks.
"""

from __future__ import annotations

import io
import random
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str  # "error", "ok" or "either"


def photo_like(size: tuple[int, int] = (160, 120), seed: int = 0) -> Image.Image:
    """A smooth gradient with noise: compresses like a photo (JPEG has real entropy-coded data)."""
    width, height = size
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=-1) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 60_000, height: int = 60_000, rows: int = 64) -> bytes:
    """A valid-looking RGB PNG declaring ``width x height`` (3.6 GP, ~10 GB decoded).

    The IDAT holds the first ``rows`` rows of zeros, compressed (deflate squeezes them ~1000x),
    so the file is small while a decoder that trusted the header would allocate gigabytes.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def gif_frames(frames: int = 1000, side: int = 16) -> bytes:
    """An animated GIF with many frames (only the first is used)."""
    images = [Image.new("P", (side, side), color=i % 256) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)


def bogus_exif_jpeg(img: Image.Image) -> list[tuple[str, bytes]]:
    """JPEGs whose EXIF block lies: impossible orientation, wrong types, offsets past the end."""
    out = []
    exif = Image.Exif()
    exif[0x0112] = 9  # Orientation must be 1..8
    exif[0x9999] = b"\xff" * 40  # an unknown tag
    exif[0x010F] = "x" * 3000  # a long Make string
    out.append(("exif-bad-orientation.jpg", encode(img, "JPEG", exif=exif.tobytes())))
    # Orientation stored as a string instead of a SHORT.
    text = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    text += struct.pack("<HHI", 0x0112, 2, 4) + b"six\x00" + struct.pack("<I", 0)
    out.append(("exif-orientation-string.jpg", encode(img, "JPEG", exif=text)))
    # A hand-made TIFF header whose IFD offset and entry counts point far past the block.
    broken = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\x00" * 16
    out.append(("exif-ifd-past-end.jpg", encode(img, "JPEG", exif=broken)))
    many = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 0xFFFF) + b"\x01\x12\x00\x03" * 8
    out.append(("exif-65535-entries.jpg", encode(img, "JPEG", exif=many)))
    # An orientation tag claiming 2^31 values, with a pointer past the end.
    huge = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    huge += struct.pack("<HHII", 0x0112, 3, 0x7FFFFFFF, 0xFFFFFF00) + struct.pack("<I", 0)
    out.append(("exif-huge-count.jpg", encode(img, "JPEG", exif=huge)))
    return out


def truncations(data: bytes, name: str, offsets: int = 24, suffix: str = ".jpg") -> list[Case]:
    """``data`` cut at ``offsets`` points spread over the file (header, tables, scan, the very end)."""
    n = len(data)
    points = {1, 2, 3, 4, 10, 20, 100, 200, n // 2, n - 2, n - 1} | {n * k // offsets for k in range(1, offsets)}
    cases = []
    for cut in sorted(points):
        if not 0 < cut < n:
            continue
        # The last bytes are the end marker (JPEG EOI, PNG IEND): a decoder may not need them.
        expect = "either" if cut >= n - 12 else "error"
        cases.append(Case(f"{name}-cut{cut}{suffix}", data[:cut], expect))
    return cases


def zip_named_jpg() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("cat.jpg", encode(photo_like(), "JPEG"))
        archive.writestr("../../escape.txt", "an archive member that tries to leave its folder")
    return out.getvalue()


def corpus(seed: int = 0, offsets: int = 24) -> list[Case]:
    """Every hostile case, deterministic for a given ``seed``."""
    rng = random.Random(seed)
    img = photo_like(seed=seed)
    jpeg = encode(img, "JPEG", quality=90)
    gray16 = (np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)  # values up to 64,491
    cases = truncations(jpeg, "truncated", offsets)
    cases += truncations(encode(img, "PNG"), "truncated", 6, ".png")
    cases += [
        Case("empty.jpg", b"", "error"),
        Case("zeros.jpg", b"\x00" * 4096, "error"),
        Case("random.jpg", rng.randbytes(20_000), "error"),
        Case("random-after-jpeg-magic.jpg", b"\xff\xd8\xff\xe0" + rng.randbytes(5000), "error"),
        Case("random-after-png-magic.png", b"\x89PNG\r\n\x1a\n" + rng.randbytes(5000), "error"),
        Case("page.jpg", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", "error"),
        Case("archive.jpg", zip_named_jpg(), "error"),
        Case("script.jpg", b"#!/bin/sh\nrm -rf /\n", "error"),
        Case("svg.jpg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "error"),
        Case("bomb-60000x60000.png", png_bomb(), "error"),
        Case("tall-1x65535.png", encode(Image.new("RGB", (1, 65535), (200, 120, 40)), "PNG"), "ok"),
        Case("wide-65535x1.png", encode(Image.new("RGB", (65535, 1), (40, 120, 200)), "PNG"), "ok"),
        Case("frames-1000.gif", gif_frames(), "ok"),
        Case("cmyk.jpg", encode(img.convert("CMYK"), "JPEG"), "ok"),
        Case("gray16.png", encode(Image.fromarray(gray16), "PNG"), "ok"),
        Case("rgba.png", encode(img.convert("RGBA"), "PNG"), "ok"),
        Case("palette-transparent.gif", encode(img.convert("P"), "GIF", transparency=0), "ok"),
        Case("one-pixel.png", encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), "ok"),
        Case("webp.jpg", encode(img, "WEBP"), "ok"),  # wrong extension, right content: used
    ]
    cases += [Case(name, data, "ok") for name, data in bogus_exif_jpeg(img)]
    return cases


def write_corpus(folder: Path, cases: list[Case]) -> dict[str, Case]:
    """Write every case into ``folder`` (created); returns ``{path: case}``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for case in cases:
        path = folder / case.name
        path.write_bytes(case.data)
        out[str(path)] = case
    return out


def one_sentence(message: str, name: str | None = None) -> bool:
    """A user-facing error: one line, one sentence ending in a full stop, no traceback; names the file."""
    if not message or "\n" in message or "Traceback" in message or len(message) > 400:
        return False
    if not message.rstrip().endswith("."):
        return False
    # No second sentence outside parentheses (details in parentheses are fine).
    outside = re.sub(r"\([^()]*(\([^()]*\)[^()]*)*\)", "", message)
    if re.search(r"[.!?]\s+[A-Z]", outside.rstrip(".")):
        return False
    return name is None or name in message


def vm_rss_mib(pid: int) -> float:
    """Resident memory of a running process (``VmRSS`` in /proc/PID/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
