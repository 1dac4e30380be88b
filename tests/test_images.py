"""Safe decode: every supported mode and format, and every kind of bad file."""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog import images
from catdog.images import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
    decode,
    read_info,
    sniff_format,
)

from conftest import image_bytes
from hostile import many_scans_jpeg


@pytest.mark.parametrize(
    ("fmt", "save"),
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("GIF", {}),
        ("TIFF", {}),
    ],
)
def test_formats_decode_to_rgb_with_the_right_size(fmt, save):
    img = decode(image_bytes(fmt, size=(64, 48), **save))
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    # The gradient survives: left edge dark in red, right edge bright.
    pixels = np.asarray(img)
    assert pixels[:, :4, 0].mean() < 60 and pixels[:, -4:, 0].mean() > 190


def test_heif_decodes():
    """pillow-heif is a dependency: HEIC/HEIF photos from phones decode (and it writes the test file)."""
    assert decode(image_bytes("HEIF")).size == (64, 48)


def test_avif_decodes_where_pillow_reads_it():
    """AVIF (phones and browsers save it) decodes where the installed Pillow reads it, as the pinned one does;
    it was once refused as "a AVIF file, an unsupported format" although Pillow could read it."""
    from PIL import features

    assert features.check("avif"), "the pinned Pillow (constraints.txt) reads AVIF"
    data = image_bytes("AVIF")
    assert sniff_format(data[:32]) == "AVIF" and decode(data).size == (64, 48)
    pixels = np.asarray(decode(data))
    assert pixels[:, :4, 0].mean() < 60 and pixels[:, -4:, 0].mean() > 190


def test_a_file_with_no_size_is_read_no_further_than_the_limit(tmp_path):
    """A pipe or a device has no size to check before reading (``catdog predict /dev/zero`` never ends): the read
    stops at the limit, with one sentence, where it once read until memory ran out and took the batch with it."""
    import contextlib
    import os
    import threading

    pipe = tmp_path / "stream.jpg"
    os.mkfifo(pipe)

    def write() -> None:
        with contextlib.suppress(BrokenPipeError):  # the reader stops at the limit and closes its end
            pipe.write_bytes(image_bytes() + bytes(2_000_000))

    threading.Thread(target=write, daemon=True).start()
    with pytest.raises(ImageTooLargeError, match=r"'.*stream\.jpg' is over the 1 MB limit for one image\."):
        images._read_source(pipe, 1_000_000)


def test_a_socket_is_said_to_be_one(tmp_path, monkeypatch):
    """``catdog predict sock.jpg``, a socket so named, said "cannot be read (No such device or address)", the OS's
    words for opening it, which leave a person guessing."""
    import socket

    monkeypatch.chdir(tmp_path)  # a socket's path is short: 108 bytes at most
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind("sock.jpg")
    with pytest.raises(ImageError, match=r"^'sock\.jpg' is a socket, not an image file\.$"):
        images.read_file("sock.jpg")


def test_a_named_pipe_reads_in_a_process_with_over_1024_files_open(tmp_path):
    """A server has many files open; select.select, which waited on a named pipe for its writer, raised "filedescriptor
    out of range in select()" (ValueError, a traceback) for a descriptor over 1023. Any descriptor now works."""
    import os
    import resource
    import threading

    from conftest import missing

    wanted = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted + 16:
        missing(f"the hard limit of open files ({hard}) is below {wanted + 16}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted + 16), hard))
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(wanted)]
    try:
        empty, written = tmp_path / "empty.jpg", tmp_path / "written.jpg"
        os.mkfifo(empty)
        os.mkfifo(written)
        assert images.read_file(empty) == b""  # no writer: read as empty, as with few files open
        threading.Thread(target=written.write_bytes, args=(image_bytes(),), daemon=True).start()
        assert decode(written).size == (64, 48)
    finally:
        for descriptor in opened:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_bytes_in_memory_are_decoded_whatever_their_size():
    """Bytes in memory were read under their reader's own limit (the server's --max-file-mb, which may be over
    64 MB; ``catdog predict -`` stops at 64 MB): decode refused bytes over its file limit, so a server run with
    --max-file-mb 100 answered a 72 MB photo "'upload' is over the 67 MB limit for one image."."""
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 120, 40)).save(buffer, format="BMP")  # 1.44 MB, uncompressed
    assert decode(buffer.getvalue(), max_bytes=1_000_000).size == (800, 600)


@pytest.mark.parametrize("mode", ["L", "P", "1", "CMYK", "I", "RGBA", "LA"])
def test_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I" else "PNG"
    img = decode(image_bytes(fmt, mode=mode))
    assert img.mode == "RGB" and img.size == (64, 48)


def test_cmyk_jpeg_keeps_its_colours():
    red = Image.new("RGB", (32, 32), (220, 20, 20)).convert("CMYK")
    out = io.BytesIO()
    red.save(out, "JPEG", quality=95)
    r, g, b = np.asarray(decode(out.getvalue())).reshape(-1, 3).mean(0)
    assert r > 180 and g < 70 and b < 70


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    assert np.asarray(decode(out.getvalue())).min() == 255


def test_sixteen_bit_gray_is_scaled_not_clipped():
    values = np.full((8, 8), 32768, dtype=np.uint16)  # mid-gray in 16 bits
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG")
    mean = np.asarray(decode(out.getvalue())).mean()
    assert 120 < mean < 136  # clipping would give 255


def _exif_rotated_jpeg(orientation: int) -> bytes:
    """A 40x20 image, red on its left half, saved with an EXIF orientation tag."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    return out.getvalue()


def test_exif_orientation_turns_the_photo_upright():
    # Orientation 6 = the camera was turned; viewers rotate 90° clockwise: red ends on top.
    img = decode(_exif_rotated_jpeg(6))
    assert img.size == (20, 40)
    pixels = np.asarray(img).astype(int)
    assert pixels[:20, :, 0].mean() > 200 and pixels[20:, :, 0].mean() < 60
    # Orientation 1 leaves it alone.
    assert decode(_exif_rotated_jpeg(1)).size == (40, 20)


def test_draft_mode_decodes_large_jpegs_at_reduced_scale():
    data = image_bytes("JPEG", size=(2000, 1600), quality=90)
    small = decode(data, min_size=256)
    assert min(small.size) >= 256 and small.size[0] <= 1000  # scaled by 1/4 at least... but never below 256
    assert decode(data).size == (2000, 1600)


def test_gif_first_frame_only():
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    r, _, b = np.asarray(decode(out.getvalue())).reshape(-1, 3).mean(0)
    assert r > 200 and b < 50


def test_a_multi_page_tiffs_size_and_mode_are_its_first_pages():
    """Counting a TIFF's pages moved it to its last page, whose size and mode read_info then gave: a 400x300 colour
    scan with a small grey second page was said to be a 20x10 grey image."""
    first, second = Image.new("RGB", (400, 300), (200, 10, 10)), Image.new("L", (20, 10), 5)
    out = io.BytesIO()
    first.save(out, "TIFF", save_all=True, append_images=[second])
    info = read_info(out.getvalue())
    assert (info.width, info.height, info.mode, info.frames) == (400, 300, "RGB", 2), info


# -- bad input ---------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(EmptyImageError, match="empty"):
        decode(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_jpeg_is_corrupt(fraction):
    data = image_bytes("JPEG", size=(300, 200), quality=90)
    with pytest.raises(CorruptImageError, match="truncated or corrupt|damaged|corrupt"):
        decode(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(("fmt", "kept"), [("JPEG", 0.5), ("PNG", 0.5), ("GIF", 0.5), ("JPEG", 100), ("PNG", 20)])
def test_a_file_cut_short_says_so_in_words(tmp_path: Path, fmt: str, kept: float) -> None:
    """Pillow's "image file is truncated (15 bytes not processed)" reached the page and the CLI inside the
    sentence's own brackets; a person is told what it means instead. Cut in its header (the first 100 bytes of a
    JPEG, 20 of a PNG) it said "is corrupt and cannot be opened (Truncated File Read)": the same sentence now."""
    path = tmp_path / f"cut.{fmt.lower()}"
    data = image_bytes(fmt, size=(300, 200))
    path.write_bytes(data[: int(len(data) * kept) if kept < 1 else int(kept)])
    with pytest.raises(CorruptImageError) as refused:
        decode(path)
    assert str(refused.value) == f"'{path}' is truncated or corrupt (the file ends before its image does)."


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "HTML"),
        (b"just some words in a text file\n", "text"),
    ],
)
def test_non_images_with_an_image_extension(tmp_path, content, kind):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(NotAnImageError, match=f"not an image: its content is {kind}"):
        decode(path)


def test_zip_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(NotAnImageError, match="ZIP"):
        decode(path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries only a tiny (compressed) data stream."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_png_bomb_is_refused_from_the_header():
    with pytest.raises(ImageTooLargeError, match="60000x60000"):
        decode(_png_header_only(60000, 60000))


@pytest.mark.parametrize("junk", [b"", b"\x00\x00"], ids=["plain", "junk-before-each-scan"])
def test_a_jpeg_of_endless_scans_is_refused_from_its_markers(junk):
    """Each scan is decoded over the whole image: 10,000 of 40 MP (700 kB) kept a server's thread busy a minute."""
    bomb = many_scans_jpeg(6400, 6250, 10_000, junk)
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="progressive JPEG of more than 100 scans"):
        decode(bomb, max_pixels=40_000_000)
    assert time.perf_counter() - started < 1.0


def test_scans_are_counted_as_libjpeg_reads_them():
    """The limit itself decodes; FF DA bytes in an EXIF thumbnail or an ICC profile are no scans."""
    assert decode(many_scans_jpeg(scans=images.MAX_JPEG_SCANS - 1)).size == (1024, 1024)  # and the DC scan
    with pytest.raises(ImageTooLargeError):
        decode(many_scans_jpeg(scans=images.MAX_JPEG_SCANS))
    progressive = image_bytes("JPEG", size=(300, 200), progressive=True)
    assert images._jpeg_scans(progressive) == 10  # libjpeg's progression for a colour image
    icc = (b"\xff\xda\x00\x02" * 200)[:700]
    assert images._jpeg_scans(image_bytes("JPEG", size=(300, 200), icc_profile=icc, exif=icc)) == 1


def test_pixel_limit_is_configurable():
    data = image_bytes("PNG", size=(100, 100))
    with pytest.raises(ImageTooLargeError, match="limit"):
        decode(data, max_pixels=5_000)
    assert decode(data, max_pixels=10_000).size == (100, 100)


def test_extension_is_never_trusted(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(image_bytes("PNG"))
    assert decode(path).size == (64, 48)
    assert read_info(path).format == "PNG"
    assert not images.extension_matches(path, "PNG")


def test_unsupported_format_is_named():
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, "ICO")
    with pytest.raises(UnsupportedFormatError, match="ICO"):
        decode(ico.getvalue())


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        decode(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        decode(tmp_path)


def test_every_error_is_one_sentence():
    bad = [b"", b"\xff\xd8\xff\xe0garbage", b"<html></html>", _png_header_only(60000, 60000), b"\x00" * 100]
    for data in bad:
        with pytest.raises(ImageError) as info:
            decode(data)
        message = str(info.value)
        assert "\n" not in message and message.endswith(".") and len(message) < 200


def test_sniff_format():
    assert sniff_format(image_bytes("JPEG")[:32]) == "JPEG"
    assert sniff_format(image_bytes("PNG")[:32]) == "PNG"
    assert sniff_format(image_bytes("WEBP")[:32]) == "WEBP"
    assert sniff_format(b"PK\x03\x04rest") == "ZIP"
    assert sniff_format(b"\x00\x01\x02\x03") is None


def test_text_in_any_language_is_text():
    """The first 64 bytes of a Japanese note end inside a character (3 bytes each in UTF-8): the cut character
    failed the UTF-8 check, and such a note was "not an image Pillow recognises (unknown content)", where an
    English one is "its content is text"."""
    note = ("猫と犬の写真についてのメモです。" * 5).encode()
    assert len(note[:64].decode("utf-8", "ignore").encode()) < 64  # cut inside a character
    assert sniff_format(note[:64]) == "TEXT"
    with pytest.raises(ImageError, match="its content is text"):
        decode(note)
    assert sniff_format(b"plain \xff\xfe text") is None  # not UTF-8 anywhere but at the end: still no text


def test_real_photo_decodes(cat_photo):
    img = decode(cat_photo)
    assert img.mode == "RGB" and min(img.size) > 100


@pytest.mark.parametrize(
    ("size", "max_pixels", "words"),
    [
        ((1000, 1000), 100_000, "(1.0 MP), over the 0.1 MP limit"),
        ((6325, 6325), 40_000_000, "(40.01 MP), over the 40 MP"),
    ],
)
def test_pixel_limit_message_tells_the_photo_from_the_limit(size, max_pixels, words):
    with pytest.raises(ImageTooLargeError) as refused:
        decode(_png_header_only(*size), max_pixels=max_pixels)
    assert words in str(refused.value)


def test_an_avif_with_the_heif_brand_first_is_named_an_avif():
    """An AVIF may give the generic HEIF brand first (mif1) and avif among its compatible brands; the first brand
    alone named it HEIF, so a cut one was "looks like HEIF" where the app said AVIF."""
    data = image_bytes("AVIF")
    mif1_first = data[:8] + b"mif1" + data[12:]
    assert b"avif" in mif1_first[16 : int.from_bytes(mif1_first[:4], "big")]  # still an AVIF by its brands
    assert sniff_format(mif1_first[:64]) == "AVIF"
    heic = data[:8] + b"heic" + data[12:16] + b"mif1heic" + data[24:]  # a phone's HEIC: no AVIF brand
    assert sniff_format(heic[:24]) == "HEIF"
    with pytest.raises(ImageError, match="AVIF"):
        decode(mif1_first[: len(mif1_first) // 2])
