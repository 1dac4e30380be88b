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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from serving import Server


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


def many_scans_jpeg(width: int = 1024, height: int = 1024, scans: int = 1000, junk: bytes = b"") -> bytes:
    """A valid progressive grayscale JPEG whose AC scan comes ``scans`` times: libjpeg decodes each over the image.

    Every block is zero, so one scan is a few end-of-band runs (a few bytes): 1,000 scans of a megapixel take
    30 kB and a second to decode, 10,000 of 40 MP a minute. ``junk`` goes before each scan's marker (libjpeg
    skips it with a warning).
    """

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    def entropy(symbols: list[tuple[int, int]]) -> bytes:  # (value, bits) pairs, then 1-bits padding, FF stuffed
        bits = "".join(format(value, f"0{n}b") for value, n in symbols if n)
        bits += "1" * (-len(bits) % 8)
        return bytes(int(bits[k : k + 8], 2) for k in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")

    blocks = -(-width // 8) * -(-height // 8)
    out = b"\xff\xd8" + segment(0xDB, b"\x00" + b"\x01" * 64)  # SOI, a quantisation table of ones
    out += segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")  # progressive, grayscale
    # Huffman tables of one symbol each (code "0"): DC difference 0, and AC "EOB run of 2^14 or more" (EOB14).
    out += segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")
    out += segment(0xC4, b"\x10" + b"\x01" + b"\x00" * 15 + b"\xe0")
    out += segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + entropy([(0, 1)] * blocks)  # the DC scan: all zero
    assert blocks >= 16384, "an EOB14 run covers 16,384 to 32,767 blocks: make the image larger"
    runs, left = [], blocks
    while left:
        run = min(left, 32767)
        run -= max(0, 16384 - (left - run)) if left > run else 0  # the last run keeps at least 16,384
        runs.append(run)
        left -= run
    ac = segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + entropy([(0, 1), *((r - 16384, 14) for r in runs)])
    return out + (junk + ac) * scans + b"\xff\xd9"


def garbled_tiffs(img: Image.Image, rng: random.Random) -> list[tuple[str, bytes, str]]:
    """TIFFs with a sound header whose compressed strip is random bytes: libtiff's own decoders fail.

    Before catdog silenced libtiff, each printed a line of its own to stderr ("LZWDecode: ...").
    Packbits decodes any bytes, so that one yields an image of noise.
    """
    out = []
    for compression in ("tiff_lzw", "tiff_deflate", "jpeg", "packbits"):
        data = bytearray(encode(img, "TIFF", compression=compression))
        header = Image.open(io.BytesIO(bytes(data)))
        start, size = header.tag_v2[273][0], header.tag_v2[279][0]  # StripOffsets, StripByteCounts
        data[start + 16 : start + size] = rng.randbytes(size - 16)
        out.append((f"garbled-{compression}.tif", bytes(data), "ok" if compression == "packbits" else "error"))
    return out


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
        Case("scans-1000.jpg", many_scans_jpeg(), "error"),
        Case("cmyk.jpg", encode(img.convert("CMYK"), "JPEG"), "ok"),
        Case("gray16.png", encode(Image.fromarray(gray16), "PNG"), "ok"),
        Case("rgba.png", encode(img.convert("RGBA"), "PNG"), "ok"),
        Case("palette-transparent.gif", encode(img.convert("P"), "GIF", transparency=0), "ok"),
        Case("one-pixel.png", encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), "ok"),
        Case("webp.jpg", encode(img, "WEBP"), "ok"),  # wrong extension, right content: used
    ]
    cases += [Case(name, data, "ok") for name, data in bogus_exif_jpeg(img)]
    cases += [Case(name, data, expect) for name, data, expect in garbled_tiffs(img, rng)]
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


def vm_rss_mib(pid: int | str, field: str = "VmRSS") -> float:
    """Resident memory of a running process (``VmRSS`` in /proc/PID/status; ``VmHWM``: its peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


# -- one server for the whole session --------------------------------------------------------

_SHARED: dict = {}


def shared_server(request) -> Server:
    """One real ``catdog serve`` (built-in model, default limits) shared by every hardening test module.

    Started on first use and stopped when the session ends; saves a model load per module.
    Tests that need other limits start their own :class:`serving.Server`.
    """

    from conftest import builtin_model_available, missing
    from serving import Server

    if not builtin_model_available():
        missing("the built-in model's head (src/catdog/weights/builtin_head.*) is missing")
    if "server" not in _SHARED:
        log = request.getfixturevalue("tmp_path_factory").mktemp("hardening-serve") / "server.log"
        srv = Server(log=log)
        try:
            srv.wait()
        except BaseException:
            srv.stop()
            raise
        request.config.add_cleanup(srv.stop)
        _SHARED["server"] = srv
    return _SHARED["server"]


def unhandled_errors(log: str) -> list[str]:
    """Lines of a server log that show an unhandled exception."""
    return [line for line in log.splitlines() if "Traceback" in line or "Exception in ASGI" in line]


# -- fuzzing: real images of every format, mutated ---------------------------------------------


def fuzz_seeds() -> list[bytes]:
    """Real encoded images of every accepted format and common variant, for mutation."""
    img = photo_like((48, 40), seed=1)
    frames = [photo_like((24, 20), seed=i).convert("P") for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        encode(img, "JPEG", quality=85),
        encode(img, "JPEG", quality=70, progressive=True, subsampling=2),
        encode(img, "JPEG", exif=exif.tobytes()),
        encode(img.convert("CMYK"), "JPEG"),
        encode(img.convert("L"), "JPEG"),
        encode(img, "PNG"),
        encode(img.convert("P"), "PNG"),
        encode(img.convert("RGBA"), "PNG"),
        encode(Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)), "PNG"),
        encode(img.convert("LA"), "PNG"),
        encode(img, "WEBP", quality=80),
        encode(img, "WEBP", lossless=True),
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        encode(img, "BMP"),
        encode(img, "TIFF"),
        encode(img, "TIFF", compression="tiff_lzw"),
    ]


# Values that break parsers: boundaries of 8/16/32-bit fields and JPEG/PNG markers.
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0xD8, 0xD9, 0xDA, 0xC0, 0xC2, 0xDB, 0xC4, 0xE1]


def mutate(data: bytes, rng: random.Random, others: list[bytes] | None = None) -> bytes:
    """One to eight random edits: bit flips, interesting bytes, big fields, cuts, copies, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            out += rng.randbytes(rng.randint(1, 64))
            continue
        pos = rng.randrange(len(out))
        op = rng.randrange(8)
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos] = rng.choice(INTERESTING)
        elif op == 2:  # a big 16/32-bit value, e.g. a width, a length or an offset
            width = rng.choice((2, 4))
            out[pos : pos + width] = rng.choice((b"\xff", b"\x7f", b"\x00", b"\x80")) * width
        elif op == 3:
            del out[pos : pos + rng.randint(1, 256)]
        elif op == 4:  # duplicate a block (repeated markers and chunks)
            end = min(len(out), pos + rng.randint(1, 512))
            out[pos:pos] = out[pos:end]
        elif op == 5:
            out[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif op == 6:
            del out[pos:]
        elif others:  # splice: the head of this file, the tail of another
            other = rng.choice(others)
            out[pos:] = other[rng.randrange(len(other)) :]
    return bytes(out)


def fuzz_inputs(count: int, seed: int) -> Iterator[bytes]:
    """``count`` mutated inputs, generated lazily and deterministically from ``seed``."""
    rng = random.Random(seed)
    seeds = fuzz_seeds()
    for _ in range(count):
        yield mutate(rng.choice(seeds), rng, seeds)


def fuzz_decode(count: int, seed: int, hang_s: float = 2.0) -> dict:
    """Decode ``count`` mutated images; every one must give RGB or an ImageError, within ``hang_s``.

    Returns ``{"tried", "decoded", "refused", "crashes", "slow", "max_seconds", "peak_rss_mib"}``;
    ``crashes`` lists ``"ExceptionType: message (sha256 prefix of the input)"`` for anything else,
    including a decode that needed more memory than the process may have.
    """
    import hashlib
    import time

    from catdog.images import ImageError, decode

    stats = {"tried": 0, "decoded": 0, "refused": 0, "crashes": [], "slow": [], "max_seconds": 0.0}
    for data in fuzz_inputs(count, seed):
        started = time.perf_counter()
        try:
            img = decode(data)
            if img.mode != "RGB":
                raise AssertionError(f"decode returned mode {img.mode}")
            stats["decoded"] += 1
        except ImageError as err:
            if "more memory" in str(err):
                stats["crashes"].append(f"memory: {err} ({hashlib.sha256(data).hexdigest()[:12]})")
            stats["refused"] += 1
        except Exception as err:  # the finding a fuzzer is for
            stats["crashes"].append(f"{type(err).__name__}: {err} ({hashlib.sha256(data).hexdigest()[:12]})")
        elapsed = time.perf_counter() - started
        if elapsed > hang_s:
            stats["slow"].append(f"{elapsed:.1f} s ({hashlib.sha256(data).hexdigest()[:12]})")
        stats["max_seconds"] = max(stats["max_seconds"], elapsed)
        stats["tried"] += 1
    # Not getrusage's ru_maxrss: Linux carries it over from the parent through fork and exec, so a child
    # of a large process (the benchmark suite, after the ONNX benchmarks) reported the parent's 3.7 GiB.
    stats["peak_rss_mib"] = vm_rss_mib("self", "VmHWM")
    return stats


def main(argv: list[str] | None = None) -> None:
    """``python tests/hostile.py COUNT SEED [MAX_MIB]``: fuzz decode under an address-space cap; JSON out."""
    import json
    import resource
    import sys

    args = sys.argv[1:] if argv is None else argv
    count, seed = int(args[0]), int(args[1])
    max_mib = int(args[2]) if len(args) > 2 else 1024
    import catdog.images  # noqa: F401  (imports first: the cap is on what decoding adds)

    resource.setrlimit(resource.RLIMIT_AS, (max_mib * 2**20, resource.RLIM_INFINITY))
    print(json.dumps(fuzz_decode(count, seed)))


if __name__ == "__main__":
    main()
