"""Pictures that are not photos — text, patterns, gradients, shapes, noise — as extra negatives for the gate.

The open-set gate is fitted on photos of pets against photos of everything else (shared/data/neither). A
gate that also reads the middle of the network (its taps) saw no drawing, chart, pattern or scan there,
and answered cat or dog for some: a colour wheel, a microscope slide, a silhouette, a printed page
(scikit-image's sample pictures, tests/test_predict.py). These generated pictures (seeded: the same
every time) join the non-pets a shipped gate is fitted on; the cross-validation that chooses its taps and
operating point still counts only the photos of `neither`.

    python -m benchmarks.synthetic_graphics OUT_DIR    # writes them, to look at
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 256
KINDS = ("text", "pattern", "gradient", "shapes", "noise")
PER_KIND = 60
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "that",
    "data",
    "page",
    "figure",
    "table",
    "report",
    "note",
]


def text(rng: np.random.Generator) -> Image.Image:
    """A page or a label: lines of words, dark on light or the other way round."""
    light = rng.random() < 0.8
    background = tuple(int(v) for v in (rng.integers(200, 256, 3) if light else rng.integers(0, 80, 3)))
    ink = tuple(int(v) for v in (rng.integers(0, 90, 3) if light else rng.integers(180, 256, 3)))
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(8, 40))
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(0, 20))
    while y < SIZE:
        words = " ".join(rng.choice(WORDS, int(rng.integers(2, 12))))
        draw.text((int(rng.integers(0, 30)), y), words, fill=ink, font=font)
        y += int(size * rng.uniform(1.2, 2.0))
    return image


def pattern(rng: np.random.Generator) -> Image.Image:
    """Checkerboards, stripes and grids, at any scale and angle."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u, v = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    period = rng.uniform(6, 80)
    kind = rng.integers(3)
    if kind == 0:
        mask = (np.floor(u / period) + np.floor(v / period)) % 2
    elif kind == 1:
        mask = np.floor(u / period) % 2
    else:
        mask = ((u % period) < period * 0.15) | ((v % period) < period * 0.15)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return Image.fromarray(np.where(mask[..., None] > 0, a, b).astype(np.uint8))


def gradient(rng: np.random.Generator) -> Image.Image:
    """Linear, radial and around-a-centre colour gradients (a colour wheel among them)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    cx, cy = rng.uniform(0.2, 0.8, 2)
    kind = rng.integers(3)
    if kind == 0:
        t = x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)
    elif kind == 1:
        t = np.hypot(x - cx, y - cy) * rng.uniform(1, 3)
    else:
        t = (np.arctan2(y - cy, x - cx) / (2 * math.pi)) % 1.0
    phases = rng.uniform(0, 2 * math.pi, 3)
    rgb = 0.5 + 0.5 * np.cos(2 * math.pi * t[..., None] + phases)
    if kind == 2 and rng.random() < 0.5:  # a wheel: fades to white at the centre
        rgb = 1 - (1 - rgb) * np.clip(np.hypot(x - cx, y - cy)[..., None] * 3, 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def shapes(rng: np.random.Generator) -> Image.Image:
    """Filled shapes and silhouettes on a plain background, as in logos, icons and diagrams."""
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 8))):
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            x0, y0 = rng.integers(0, SIZE - 40, 2)
            r = int(rng.integers(10, 120))
            draw.ellipse([int(x0), int(y0), int(x0) + r, int(y0) + int(r * rng.uniform(0.5, 1.5))], fill=fill)
        elif kind == 1:
            centre, n = rng.uniform(40, SIZE - 40, 2), int(rng.integers(3, 14))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = rng.uniform(15, 110, n)
            points = [
                (float(centre[0] + r * math.cos(a)), float(centre[1] + r * math.sin(a))) for a, r in zip(angles, radii)
            ]
            draw.polygon(points, fill=fill)
        else:
            points = [tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(int(rng.integers(2, 6)))]
            draw.line(points, fill=fill, width=int(rng.integers(2, 14)))
    return image


def noise(rng: np.random.Generator) -> Image.Image:
    """Noise at one scale, blurred or not, in colour or grey: stains, grain, blobs, static."""
    cells = int(rng.choice([4, 8, 16, 32, 64, 256]))
    channels = 3 if rng.random() < 0.5 else 1
    small = rng.random((cells, cells, channels))
    image = Image.fromarray((small * 255).astype(np.uint8).squeeze()).resize((SIZE, SIZE), Image.BICUBIC)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 6))))
    if rng.random() < 0.5:  # thresholded: blobs on a background
        array = np.asarray(image.convert("L"), dtype=np.float32)
        tint = rng.integers(0, 256, (2, 3))
        image = Image.fromarray(np.where((array > np.median(array))[..., None], tint[0], tint[1]).astype(np.uint8))
    return image.convert("RGB")


def write_graphics(folder: Path, per_kind: int = PER_KIND, seed: int = 0) -> list[Path]:
    """Write ``per_kind`` pictures of each of KINDS as PNG files into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = {"text": text, "pattern": pattern, "gradient": gradient, "shapes": shapes, "noise": noise}
    paths = []
    for k, kind in enumerate(KINDS):
        rng = np.random.default_rng([seed, k])
        for i in range(per_kind):
            path = folder / f"{kind}-{i:03d}.png"
            if not path.exists():
                makers[kind](rng).save(path)
            else:
                makers[kind](rng)  # the same draws as when it was written, so the next picture is the same
            paths.append(path)
    return paths


def prepared_graphics(pre, cache_dir: Path):
    """The fitted pictures (seed 0), written under ``cache_dir`` and decoded for ``pre`` (a PreparedData)."""
    from catdog.data import prepare

    write_graphics(Path(cache_dir) / "synthetic-graphics" / "graphics")
    return prepare(Path(cache_dir) / "synthetic-graphics", pre, cache_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    print(len(write_graphics(parser.parse_args().out)), "pictures")


if __name__ == "__main__":
    main()
