"""Safe decoding: the one way bytes become an upright RGB image.

Every part of catdog (data check, training, evaluation, prediction, serving) calls
:func:`decode`. It trusts the content, never the file name, refuses hostile input from
the header before any pixel is decoded, and turns every Pillow failure into one typed
:class:`ImageError` whose message is a single sentence a person can act on.
"""

from __future__ import annotations

import codecs
import ctypes
import io
import logging
import os
import re
import selectors
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from catdog.errors import CatdogError

try:  # HEIC/HEIF photos from phones: pillow-heif is a dependency, and a broken install is said as such
    import pillow_heif
except ImportError as err:
    raise CatdogError(
        f"catdog cannot import pillow-heif, the dependency that reads HEIC/HEIF photos ({err}); "
        "reinstall it: pip install pillow-heif."
    ) from None
pillow_heif.register_heif_opener()

# Every camera's photos, the 200-MP mode of phones (16320x12240) included: at 40 MP, a 45-MP camera's whole
# folder was refused. A JPEG is decoded at a reduced scale (draft), so a 200-MP one takes 0.6 s and 28 MiB;
# a 200-MP PNG, decoded whole, 13 s and 1.5 GiB (2-core EPYC, 2026-12-06). The server keeps its own 40 MP
# (--max-megapixels), photos from strangers; the phone app decodes whole, within APP_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 200_000_000
# In MB, as the server's --max-file-mb: 64 MiB read "over the 67 MB limit", a figure set nowhere.
DEFAULT_MAX_BYTES = 64_000_000
# Scans in one progressive JPEG. libjpeg decodes every scan over the whole image, and a scan of blocks that are
# all zero takes a few bytes (one end-of-band run), so a 700 kB upload of 10,000 scans at 40 MP kept a decode
# thread busy for a minute, long after the client's 30 s timeout (2-core EPYC, 2026-12-06). A camera's or an
# encoder's progressive JPEG has about 10 (mozjpeg's at most a few dozen); libtiff refuses JPEG data over 100 too.
MAX_JPEG_SCANS = 100
# How long a named pipe is given for a writer to start before it reads as empty (images._open_pipe).
_PIPE_WRITER_WAIT_S = 1.0
# A marker with a length: FF then not 00 (a stuffed byte in scan data), a restart or TEM (no length), or another FF
# (a fill byte: the search goes on from it). No "\xff+": that form searched a 1 MB photo 40 times slower.
_NEXT_MARKER = re.compile(rb"\xff([^\x00\x01\xd0-\xd8\xff])")

# Pillow's own bomb guard warns or raises at its own thresholds; we apply ours from the
# header instead, so the limit is the one the caller chose.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _quiet_libtiff() -> None:
    """Stop the libtiff that Pillow loaded from printing its own warnings and errors to stderr.

    A damaged TIFF makes libtiff write lines such as "TIFFFillStrip: Invalid strip byte count"
    to stderr, beside the one sentence catdog reports for that file (or in a server's log, once
    per hostile upload). Its errors still fail the decode: Pillow checks libtiff's return codes,
    not its messages. Where the library cannot be found (no /proc, another build), nothing changes.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libtiff" in line}
        for path in paths:
            libtiff = ctypes.CDLL(path)  # the copy already loaded, not a second one
            libtiff.TIFFSetWarningHandler.argtypes = libtiff.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
            libtiff.TIFFSetWarningHandler.restype = libtiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
            libtiff.TIFFSetWarningHandler(None)
            libtiff.TIFFSetErrorHandler(None)
    except (OSError, AttributeError):
        pass


_quiet_libtiff()
# Pillow's Python-level warnings and log lines about damaged tags it skips ("Tag data larger than
# file", bad EXIF, "More samples per pixel than can be decoded"): the file then decodes, or fails
# with catdog's one sentence. Filters, unlike warnings.catch_warnings, are safe while a server
# decodes in several threads.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
logging.getLogger("PIL").setLevel(logging.CRITICAL)  # it logs, then raises what we report

# Formats we decode, as Pillow names them (its JPEG opener also yields MPO, the camera variant).
# AVIF where this Pillow reads it (recent wheels bundle libavif); with an older one it is refused in one sentence.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "HEIF") + (("AVIF",) if features.check("avif") else ())

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".bmp",
        ".dib",
        ".gif",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)

# Which extensions honestly describe which detected format, the usual one first.
EXTENSIONS_BY_FORMAT = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "GIF": (".gif",),
    "TIFF": (".tif", ".tiff"),
    "HEIF": (".heic", ".heif"),
    "AVIF": (".avif",),
}


class ImageError(CatdogError):
    """An input that cannot be used as an image; ``str(err)`` is one clear sentence."""


class EmptyImageError(ImageError):
    """The file or upload has no bytes."""


class NotAnImageError(ImageError):
    """The content is not an image at all (HTML, text, an archive, ...)."""


class UnsupportedFormatError(ImageError):
    """An image format catdog does not decode."""


class CorruptImageError(ImageError):
    """A truncated or damaged image."""


class ImageTooLargeError(ImageError):
    """More pixels (or bytes) than the configured limit."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, read without decoding pixels."""

    format: str
    width: int
    height: int
    mode: str
    # Pictures in an animated GIF, PNG or WebP or a multi-page TIFF: every command uses the first alone. 1 for a
    # JPEG with pictures after it (MPO: a phone's depth map or preview), which is one photo.
    frames: int = 1


# ISO base media files (HEIF and its AVIF) name their kind by brands in their first box, ftyp: a major brand, then
# compatible ones. An AVIF may have the generic HEIF brand first (mif1) and avif after (the app's worker.js reads
# them alike); a phone's HEIC has heic, heix, ... or mif1 alone.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ftyp box at the start of ``head`` (its size ends the list)."""
    size = int.from_bytes(head[:4], "big")
    compatible = head[16 : min(size, len(head))]
    return {head[8:12]} | {compatible[at : at + 4] for at in range(0, len(compatible) - 3, 4)}


def sniff_format(head: bytes) -> str | None:
    """Name the format from the first bytes of the content (``"JPEG"``, ``"PNG"``, ``"HTML"`` ...).

    Returns None when nothing is recognised. Used to tell a mislabelled file from a broken one.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & _AVIF_BRANDS:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "ZIP"
    if head[:3] == b"\x1f\x8b\x08":
        return "GZIP"
    if head[:4] == b"%PDF":
        return "PDF"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    text = head.lstrip()[:64].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML"
    if text.startswith((b"<?xml", b"<svg")):
        return "SVG" if b"<svg" in head.lower() else "XML"
    if head and _looks_like_text(head):
        return "TEXT"
    return None


def _looks_like_text(head: bytes) -> bool:
    # Incremental (final=False): the head may end inside a character, as 64 bytes of Japanese or emoji do.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return False
    return all(b >= 32 or b in b"\t\r\n\f" for b in head)


def _name(source_name: str | None) -> str:
    return f"'{source_name}'" if source_name else _UNNAMED


# How a sentence about an image's bytes (no file name known) begins.
_UNNAMED = "The image"


def with_name(sentence: str, name: str | os.PathLike) -> str:
    """A sentence about an image's content ("The image is ...") naming ``name`` instead: its first words only. Every
    "The image" was replaced once, the one inside a file name that a sentence already held too."""
    return f"'{name}'{sentence.removeprefix(_UNNAMED)}" if sentence.startswith(_UNNAMED) else sentence


def without_name(sentence: str, name: str | os.PathLike) -> str:
    """The reverse of :func:`with_name`: a sentence naming ``name`` first as one about content, to be kept by
    content hash (a copy of the file elsewhere is named where it is, not where the first was read)."""
    quoted = f"'{name}'"
    return _UNNAMED + sentence.removeprefix(quoted) if sentence.startswith(quoted) else sentence


def tenths_up(count: int, unit: int = 1_000_000) -> str:
    """A count over a limit in tenths of ``unit``, rounded up: 10,000,001 bytes are '10.1' MB, never '10.0', which
    read "10.0 MB, over the 10 MB limit"."""
    return f"{-(-count * 10 // unit) / 10:.1f}"


def read_within_limit(stream: BinaryIO, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a stream with no size to check first (a pipe, a device, standard input), read no further than
    one byte past ``max_bytes``: a longer one is refused in one sentence, never read until memory runs out."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"'{name}' is over the {max_bytes / 1e6:g} MB limit for one image.")
    return data


def read_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of one image file, or :class:`ImageError` saying in one sentence why not (too large, a folder,
    gone, unreadable), the file named as ``path`` is given."""
    return _read_source(path, max_bytes)[0]


def _read_source(source: bytes | str | os.PathLike, max_bytes: int) -> tuple[bytes, str | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    path = Path(source)
    try:
        status = path.stat()
        if stat.S_ISSOCK(status.st_mode):  # open() says "No such device or address", which names no cause
            raise ImageError(f"'{path}' is a socket, not an image file.")
        if status.st_size > max_bytes:
            raise ImageTooLargeError(
                f"'{path}' is {tenths_up(status.st_size)} MB, over the {max_bytes / 1e6:g} MB limit for one image."
            )
        opener = _open_pipe if stat.S_ISFIFO(status.st_mode) else open
        with opener(path, "rb") as handle:  # bounded: a pipe or a device has no size to check first
            return read_within_limit(handle, str(path), max_bytes), str(path)
    except IsADirectoryError:
        raise ImageError(f"'{path}' is a folder, not an image file.") from None
    except FileNotFoundError:
        raise ImageError(f"'{path}' does not exist.") from None
    except PermissionError:
        raise ImageError(f"'{path}' cannot be read (permission denied).") from None
    except OSError as err:
        raise ImageError(f"'{path}' cannot be read ({err.strerror or err}).") from None


def _open_pipe(path: Path, mode: str) -> BinaryIO:
    """A named pipe opened for reading without waiting for a writer: a plain open() of ``mkfifo photo.jpg`` that
    no one writes to waits forever, in a thread that no signal stops. A writer gets a moment to start; with none,
    the pipe reads as empty. A pipe with its writer already there (``<(cat photo.jpg)``) reads as it did."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    # A selector, not select.select: that raised ValueError for a descriptor over 1023, in a server with many open.
    with selectors.DefaultSelector() as waiting:
        waiting.register(descriptor, selectors.EVENT_READ)
        waiting.select(_PIPE_WRITER_WAIT_S)
    os.set_blocking(descriptor, True)  # a writer there is waited on for its bytes, as a plain open() would
    return os.fdopen(descriptor, mode)


def _open(data: bytes, name: str | None, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and enforce the pixel limit before any decoding."""
    label = _name(name)
    if not data:
        raise EmptyImageError(f"{label} is empty (0 bytes).")
    detected = sniff_format(data[:64])
    if detected in ("HTML", "TEXT", "XML", "ZIP", "GZIP", "PDF"):
        content = "text" if detected == "TEXT" else detected  # a word, not a format's name: "its content is text"
        raise NotAnImageError(f"{label} is not an image: its content is {content}.")
    if detected == "AVIF" and detected not in ACCEPTED_FORMATS:
        raise UnsupportedFormatError(
            f"{label} is an AVIF file, which this installation's Pillow cannot read; "
            "upgrade Pillow (pip install -U pillow), or use JPEG, PNG or WebP."
        )
    if detected in ("PSD", "ICO", "SVG"):
        article = "an" if detected[0] in "AEIOS" else "a"  # an ICO, an SVG, a PSD
        names = ["JPEG", "PNG", "WebP", "BMP", "GIF", "TIFF", "HEIC"] + ["AVIF"] * ("AVIF" in ACCEPTED_FORMATS)
        formats = f"{', '.join(names[:-1])} or {names[-1]}"
        raise UnsupportedFormatError(f"{label} is {article} {detected} file, an unsupported format; use {formats}.")
    try:
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        if detected is None:
            raise NotAnImageError(f"{label} is not an image Pillow recognises (unknown content).") from None
        raise CorruptImageError(f"{label} looks like {detected} but its header is damaged.") from None
    except Image.DecompressionBombError:  # pragma: no cover - MAX_IMAGE_PIXELS is None
        raise ImageTooLargeError(f"{label} declares more pixels than the limit allows.") from None
    except Exception as err:  # Pillow raises many types on hostile headers
        raise _corrupt(label, err, "is corrupt and cannot be opened") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{label} declares an empty size ({width}x{height}).")
    if width * height > max_pixels:
        size, limit = width * height / 1e6, max_pixels / 1e6
        digits = next(d for d in range(1, 7) if round(size, d) > limit or d == 6)  # never "40 MP, over 40 MP"
        raise ImageTooLargeError(f"{label} is {width}x{height} ({size:.{digits}f} MP), over the {limit:g} MP limit.")
    if img.format in ("JPEG", "MPO") and _jpeg_scans(data) > MAX_JPEG_SCANS:
        raise ImageTooLargeError(
            f"{label} is a progressive JPEG of more than {MAX_JPEG_SCANS} scans (a photo has about 10), "
            "which would take minutes to decode; save it again as an ordinary JPEG."
        )
    return img


def _jpeg_scans(data: bytes) -> int:
    """The scans of a JPEG's first image, counted without decoding it (up to one past the limit).

    A walk from marker to marker as libjpeg's: a segment is skipped by its length, and whatever lies between one
    and the next marker (scan data, bytes libjpeg skips as junk) is searched past, so that bytes FF DA inside an
    EXIF thumbnail or an ICC profile are not counted and junk before a scan does not hide it.
    """
    scans, i = 0, 2  # after SOI
    while scans <= MAX_JPEG_SCANS and (found := _NEXT_MARKER.search(data, i)):
        marker, i = found[1][0], found.end()
        if marker == 0xD9:  # end of the first image (an MPO's others follow)
            break
        scans += marker == 0xDA
        i += int.from_bytes(data[i : i + 2], "big")  # the segment's length, its own two bytes included
    return scans


# Pillow's words for a file cut short: in the pixels of a JPEG, PNG or GIF, and in a header ("Truncated File Read").
_CUT_SHORT = ("image file is truncated", "Truncated File Read")


def _corrupt(label: str, err: Exception, what: str) -> CorruptImageError:
    """The sentence for a file Pillow failed on: ``what`` it is, with Pillow's reason; a file cut short is said as
    what that means, in the one sentence whether it ends in its header or in its pixels (a JPEG cut at 100 bytes
    said "(Truncated File Read)", Pillow's words)."""
    if str(err).startswith(_CUT_SHORT):
        return CorruptImageError(f"{label} is truncated or corrupt (the file ends before its image does).")
    return CorruptImageError(f"{label} {what} ({_short(err)}).")


def _short(err: Exception) -> str:
    text = str(err).strip().rstrip(".") or type(err).__name__
    return text.splitlines()[0][:120]


def read_info(
    source: bytes | str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImageInfo:
    """Format, size and mode from the header alone; raises :class:`ImageError` like :func:`decode`."""
    data, name = _read_source(source, max_bytes)
    img = _open(data, name, max_pixels)
    fmt = "JPEG" if img.format == "MPO" else str(img.format)
    (width, height), mode = img.size, img.mode  # the first picture's: counting frames moves to the last one
    frames = _frame_count(img) if fmt in ("GIF", "PNG", "WEBP", "TIFF") else 1
    return ImageInfo(format=fmt, width=width, height=height, mode=mode, frames=frames)


# Where counting an animation's pictures stops: Pillow's n_frames walks every frame of a GIF or a TIFF, and 64 MB of
# one-pixel GIF frames is millions of them, seconds a file. A file of more is said to have "at least" this many.
FRAMES_COUNTED = 1000


def _frame_count(img: Image.Image) -> int:
    """Pictures in an animation or a multi-page TIFF, up to :data:`FRAMES_COUNTED`; 1 when those after the first are
    damaged: counting reads past the first, and Pillow raised IndexError, KeyError or TypeError on a GIF or TIFF cut
    short, which stopped a whole data check. The first picture, the one every command uses, opened."""
    try:
        if img.format not in ("GIF", "TIFF"):
            return min(img.n_frames, FRAMES_COUNTED)  # an APNG's and a WebP's header says it
        for frame in range(1, FRAMES_COUNTED):
            # As Pillow's n_frames walks them: a GIF's public seek decodes every frame on the way, a TIFF's allocates.
            img._seek(frame, False) if img.format == "GIF" else img._seek(frame)
    except EOFError:
        return frame
    except Exception:  # Pillow raises many types on damaged data
        return 1
    return FRAMES_COUNTED


def decode(
    source: bytes | str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    min_size: int | None = None,
) -> Image.Image:
    """Decode any supported image to an upright 8-bit RGB :class:`PIL.Image.Image`.

    ``min_size``: when given, a JPEG may be decoded at a reduced scale (Pillow's draft
    mode, i.e. DCT scaling) as long as both sides stay at least ``min_size`` pixels; this
    is several times faster for photos much larger than the model's input.

    Raises a subclass of :class:`ImageError` with a one-sentence message on any bad input.
    """
    data, name = _read_source(source, max_bytes)
    img = _open(data, name, max_pixels)
    label = _name(name)
    try:
        if min_size and img.format in ("JPEG", "MPO"):
            # draft() keeps both sides >= the request, so the later resize still downsamples.
            img.draft("RGB", (min_size, min_size))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except ImageError:
        raise
    except MemoryError:
        raise ImageTooLargeError(f"{label} needs more memory to decode than is available.") from None
    except Exception as err:
        raise _corrupt(label, err, "is truncated or corrupt") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: transparency composited on white, 16-bit scaled, CMYK converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img, dtype=np.int64)
        # 16-bit data arrives as I;16 or, for PNG, as 32-bit I holding 0..65535.
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values >> 8
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")


def extension_matches(path: str | os.PathLike, detected_format: str) -> bool:
    """Whether the file's extension honestly names its detected content."""
    suffix = Path(path).suffix.lower()
    return suffix in EXTENSIONS_BY_FORMAT.get(detected_format, ())


def usual_extension(detected_format: str) -> str | None:
    """``'.jpg'`` for JPEG content: what a file of it is best named; None for a format without one."""
    return next(iter(EXTENSIONS_BY_FORMAT.get(detected_format, ())), None)
