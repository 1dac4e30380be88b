"""Frozen-backbone features, computed once per image (and view) and cached on disk.

The fast CPU paths of ``catdog train``: whatever part of the pretrained backbone is frozen
gives the same output for an image every time, so each image (and view) goes through it
once, ever, and training runs only the rest on the cached output.

- ``--freeze backbone``: the pooled features; a new head trains on them in seconds.
- ``--freeze stages:N``: the activation map after the stem and the first N stages (the
  high-resolution part, most of the compute); the later stages, the last convolution and
  the head fine-tune on it, several times faster than full fine-tuning (see :func:`split_backbone`).

On CPU the frozen part runs in ONNX Runtime (several times faster than PyTorch eager here),
on a GPU in PyTorch.

Layout under ``<cache_dir>/features/<key>/``: ``features.f32`` or ``features.f16`` (rows of
``dim`` values) and ``index.json`` (``{"dim": D, "rows": {"<content hash>:<view>": row}}``).
``key`` names the backbone, what of it is frozen, its weights and the preprocessing, so any
change is a different cache. As in the pixel cache, the index is rewritten atomically after
each chunk: a killed extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catdog.augment import sample_seed, view_transform
from catdog.data import PreparedData
from catdog.errors import CatdogError
from catdog.fsutil import atomic_write, atomic_write_text, file_lock
from catdog.inference import onnx_session
from catdog.inference.cores import machine_cores
from catdog.preprocess import Preprocess, normalize

FeatureFn = Callable[[torch.Tensor], np.ndarray]  # normalised float32 NCHW batch -> (N, dim) features
Jobs = list[tuple[int, int]]  # (image index, view)
Taps = tuple[int, ...]  # indices of backbone blocks whose pooled output the open-set gate reads
Say = Callable[[str], None]  # a run's voice (its log's info), where a store says it dropped a damaged cache


class PooledFeatures(nn.Module):
    """A timm model up to its pooled, pre-logits features (what a new head sees).

    With ``taps`` (an EfficientNet's block indices), the pooled output of those blocks follows, in order.
    """

    def __init__(self, backbone: nn.Module, taps: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.backbone, self.taps = backbone, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from catdog.models.builtin import backbone_maps

        tapped: dict[int, torch.Tensor] = {}
        features = self.backbone.forward_head(backbone_maps(self.backbone, x, self.taps, tapped), pre_logits=True)
        return torch.cat([features, *(tapped[i] for i in self.taps)], dim=1) if self.taps else features


def split_backbone(
    backbone: nn.Module,
    stages: int,
    head: nn.Module | None = None,
    gate: nn.Module | None = None,
    open_set: nn.Module | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Cut an EfficientNet-family timm model after its stem and first ``stages`` stages.

    Returns ``(trunk, tail)``: the trunk maps images to flat activation maps (what is
    cached); the tail maps those maps, reshaped, through the remaining stages, the last
    convolution, pooling and ``head`` (default: the backbone's classifier) to logits, and with
    ``gate`` (a GatedClassifier's pristine gate, which starts from the same maps, and its
    ``open_set`` gate) to ``(logits, pet score, ImageNet class)``. Both share their modules with the
    model, so training the tail trains the model that is saved. The classifier's dropout is left
    out of the tail: with a frozen trunk there is little to overfit.
    """
    from timm.models.efficientnet import EfficientNet

    if not isinstance(backbone, EfficientNet):
        raise CatdogError(
            f"--freeze stages:N needs an EfficientNet-family backbone (efficientnet, tf_efficientnet_lite, "
            f"mobilenetv2); {type(backbone).__name__} is not one: use --freeze backbone or --freeze none."
        )
    if not 1 <= stages < len(backbone.blocks):
        raise CatdogError(f"--freeze stages:N takes N from 1 to {len(backbone.blocks) - 1} for this backbone.")
    trunk = nn.Sequential(backbone.conv_stem, backbone.bn1, *backbone.blocks[:stages], nn.Flatten())
    layers = nn.Sequential(*backbone.blocks[stages:], backbone.conv_head, backbone.bn2, backbone.global_pool)
    if head is None:
        return trunk, nn.Sequential(*layers, backbone.get_classifier())
    return trunk, GatedTail(layers, head, gate, open_set, stages)


class GatedTail(nn.Module):
    """Activation maps → (class logits, P(cat or dog), ImageNet class), as ``GatedClassifier.parts``.

    The maps are the output of the backbone's first ``stages`` blocks. No gate while training: nothing uses it,
    and the gate would cost a second pass. A gate that taps a block inside the cached part cannot be read
    here: then ``P(cat or dog)`` is ``None`` and ``catdog train`` computes it from the pretrained features.
    """

    def __init__(
        self, layers: nn.Module, head: nn.Module, gate: nn.Module, open_set: nn.Module | None, stages: int
    ) -> None:
        super().__init__()
        from catdog.models.builtin import add_class_indices

        self.layers, self.head, self.gate, self.open_set, self.stages = layers, head, gate, open_set, stages
        add_class_indices(self)

    def train(self, mode: bool = True) -> GatedTail:
        super().train(mode)
        self.gate.eval()  # frozen, batch norm statistics included
        return self

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        from catdog.models.builtin import judge, pristine_outputs

        pet = looks_like = None
        taps = self.open_set.taps if self.open_set is not None else ()
        if not self.training and all(i >= self.stages - 1 for i in taps):
            tapped = {self.stages - 1: maps.mean(dim=(2, 3))} if self.stages - 1 in taps else {}
            outputs = pristine_outputs(self.gate, maps, self.stages, taps, tapped)
            pet, looks_like, _ = judge(self.open_set, *outputs, self.pet_classes, self.non_pet_classes, tapped)
        return self.head(self.layers(maps)), pet, looks_like


def pooled_part(taps: Taps = ()) -> str:
    """The cache's name for the pooled features with ``taps`` (``--freeze backbone`` training's, and the gate's)."""
    return "backbone" + "".join(f"+{i}" for i in taps)


def split_pooled(rows, backbone: nn.Module, taps: Taps) -> tuple:
    """``(pooled features, [pooled output of each tap])`` of :class:`PooledFeatures` rows (an array or a tensor)."""
    from catdog.models.gate import tap_widths

    widths = [backbone.num_features, *tap_widths(backbone, taps)]
    if isinstance(rows, torch.Tensor):
        features, *tapped = rows.split(widths, dim=1)
    else:
        features, *tapped = np.split(rows, np.cumsum(widths)[:-1], axis=1)
    return features, tapped


def cache_key(architecture: str, pre: Preprocess, frozen: str = "backbone") -> str:
    """Backbone, what of it is frozen, weights version and every preprocessing setting the features depend on."""
    import timm

    from catdog.data.hashing import content_hash

    settings = json.dumps([architecture, frozen, timm.__version__, pre.to_dict()], sort_keys=True)
    part = "" if frozen == "backbone" else f"-{frozen.replace(':', '')}"
    return f"{architecture}{part}-{pre.image_size}px-{content_hash(settings.encode())[:12]}"


def onnx_feature_fn(extractor: nn.Module, onnx_file: Path, image_size: int, threads: int | None = None) -> FeatureFn:
    """Export the eval-mode feature extractor once (cached), then run it in ONNX Runtime."""
    if not onnx_file.exists():
        # .eval() on the very module exported: a wrapper left in train mode would export
        # batch-statistics BatchNorm, silently giving different features.
        module = extractor.eval()
        example = torch.zeros(2, 3, image_size, image_size)
        program = torch.onnx.export(
            module, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False
        )
        atomic_write(onnx_file, lambda tmp: program.save(str(tmp)))
    # Every core, not a torchrun process's share: rank 0 extracts alone while the other ranks wait for it.
    session = onnx_session.session(onnx_file, threads or machine_cores())
    input_name = session.get_inputs()[0].name

    def run(batch: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_name: batch.numpy()})[0]

    return run


def torch_feature_fn(extractor: nn.Module, device: torch.device) -> FeatureFn:
    """The feature extractor in PyTorch on ``device`` (bf16 autocast on a GPU)."""
    module = extractor.eval().to(device, memory_format=torch.channels_last)

    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            out = module(batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
        return out.float().cpu().numpy()

    return run


class FeatureStore:
    """Cached feature vectors keyed by ``"<content hash>:<view>"``.

    ``dtype`` float16 halves the size of large rows (activation maps) at a precision far
    below what training can notice; pooled features stay float32. ``say``, where given, hears why a damaged
    index was dropped, so that a user wondering why the run is slow knows.
    """

    def __init__(
        self, cache_dir: str | os.PathLike, key: str, dtype: np.dtype | type = np.float32, say: Say | None = None
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.dir = Path(cache_dir) / "features" / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / f"features.f{8 * self.dtype.itemsize}"
        self.index_file = self.dir / "index.json"
        self.dim = 0
        self.rows: dict[str, int] = {}
        self.dropped = ""  # why reload() dropped the index, for a run to say (it then computes the features again)
        self.reload()
        if self.dropped and say:
            say(self.dropped)

    def reload(self) -> None:
        try:
            data = json.loads(self.index_file.read_text())
            self.dim, self.rows = int(data["dim"]), dict(data["rows"])
        except (OSError, ValueError, KeyError):
            self.dim, self.rows = 0, {}
        if self.rows and (not self.file.exists() or self.file.stat().st_size < len(self.rows) * self.row_bytes):
            self.drop(f"its file holds fewer than the {len(self.rows)} vectors its index names")  # lost behind its back
        if set(self.rows.values()) != set(range(len(self.rows))):
            # Rows 0..n-1, each once: an index that skips one (a photo twice in one add, before 2026-12-07) pointed
            # past the end of what it reads, and the next add wrote another photo's vector under that key.
            self.drop("its index skips or repeats a row (written by catdog before 2026-12-07)")

    def drop(self, why: str) -> None:
        """Forget the index (its features are computed again), keeping why for the run to say."""
        self.dim, self.rows = 0, {}
        # Not printable(): the run's log escapes it as it prints it, and a backslash escaped twice read as two.
        self.dropped = f"the feature cache '{self.dir}' was dropped, {why}; its features are computed again"

    @property
    def row_bytes(self) -> int:
        return self.dim * self.dtype.itemsize

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        """Append vectors and commit the index (under the lock; other processes may be adding too)."""
        with file_lock(self.dir / ".lock"):
            self.reload()
            # One row a key: a photo and its copy (one content hash) in one batch are one key.
            fresh = {k: v for k, v in zip(keys, vectors) if k not in self.rows}
            if not fresh:
                return
            self.dim = vectors.shape[1]
            n_rows = len(self.rows)
            self.file.touch()
            with open(self.file, "r+b") as out:
                out.truncate(n_rows * self.row_bytes)  # drop vectors a killed run wrote but never indexed
                out.seek(n_rows * self.row_bytes)
                out.write(np.stack(list(fresh.values())).astype(self.dtype).tobytes())
                out.flush()
                os.fsync(out.fileno())
            for i, key in enumerate(fresh):
                self.rows[key] = n_rows + i
            atomic_write_text(self.index_file, json.dumps({"dim": self.dim, "rows": self.rows}))

    def read(self, keys: list[str]) -> np.ndarray:
        matrix = np.memmap(self.file, dtype=self.dtype, mode="r", shape=(len(self.rows), self.dim))
        return np.array(matrix[[self.rows[k] for k in keys]])


def extract(
    data: PreparedData,
    jobs: list[tuple[int, int]],
    pre: Preprocess,
    store: FeatureStore,
    feature_fn: FeatureFn,
    *,
    batch_size: int = 64,
    deadline: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[int, int]]:
    """Compute the missing features of ``(image index, view)`` jobs; returns the jobs that are cached.

    Stops early (cleanly, between batches) when ``time.monotonic()`` passes ``deadline``.
    """
    pixels = data.cache.array()
    transforms: dict[int, Callable] = {}
    todo = [(i, v) for i, v in jobs if f"{data.hashes[i]}:{v}" not in store.rows]
    if progress and len(jobs) > len(todo):
        progress(len(jobs) - len(todo))
    for start in range(0, len(todo), batch_size):
        if deadline is not None and time.monotonic() > deadline:
            break
        chunk = todo[start : start + batch_size]
        crops = []
        for i, view in chunk:
            transform = transforms.setdefault(view, view_transform(pre, view))
            square = torch.from_numpy(np.array(pixels[data.rows[i]])).permute(2, 0, 1)
            crops.append(transform(square, sample_seed(data.hashes[i], view)))
        batch = normalize(torch.stack(crops), pre, crop=False)
        store.add([f"{data.hashes[i]}:{v}" for i, v in chunk], feature_fn(batch))
        if progress:
            progress(len(chunk))
    return [(i, v) for i, v in jobs if f"{data.hashes[i]}:{v}" in store.rows]


def pretrained_features(
    data: PreparedData,
    jobs: list[tuple[int, int]],
    pre: Preprocess,
    cache_dir: str | os.PathLike,
    architecture: str,
    taps: tuple[int, ...] = (),
    say: Say | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(pooled features, ImageNet logits, pooled taps)`` of pretrained ``architecture`` for ``(image, view)`` jobs.

    What the open-set gate reads (:mod:`catdog.models.gate`): the third item holds the pooled output of each
    block in ``taps``. Without taps the features come from (and go into) the same cache as ``--freeze backbone``
    training's; all are computed in ONNX Runtime. ``say``: told when a damaged feature cache is dropped.
    """
    from catdog.models.pretrained import create_pretrained

    cache_dir = Path(cache_dir)
    backbone = create_pretrained(architecture).eval()
    key = cache_key(architecture, pre, pooled_part(taps))
    store = FeatureStore(cache_dir, key, say=say)
    extractor = PooledFeatures(backbone, taps)
    feature_fn = onnx_feature_fn(extractor, cache_dir / "onnx" / f"{key}.onnx", pre.image_size)
    extract(data, jobs, pre, store, feature_fn)
    features, tapped = split_pooled(store.read([f"{data.hashes[i]}:{v}" for i, v in jobs]), backbone, taps)
    with torch.no_grad():
        logits = backbone.get_classifier()(torch.from_numpy(np.ascontiguousarray(features))).numpy()
    return features, logits, tapped


def pretrained_gate_inputs(
    data: PreparedData,
    jobs: Jobs,
    pre: Preprocess,
    cache_dir: str | os.PathLike,
    architecture: str,
    taps: Taps = (),
    say: Say | None = None,
) -> torch.Tensor:
    """What the open-set gate reads (:func:`catdog.models.gate.gate_inputs`) for ``(image, view)`` jobs."""
    from catdog.models.gate import gate_inputs
    from catdog.models.pretrained import IMAGENET_CAT_CLASSES, IMAGENET_DOG_CLASSES

    features, logits, tapped = pretrained_features(data, jobs, pre, cache_dir, architecture, taps, say)
    pet_classes = torch.tensor(IMAGENET_CAT_CLASSES + IMAGENET_DOG_CLASSES)
    as_tensors = [torch.from_numpy(np.ascontiguousarray(t)) for t in tapped]
    pooled = torch.from_numpy(np.ascontiguousarray(features))
    return gate_inputs(pooled, torch.from_numpy(logits), pet_classes, as_tensors)
