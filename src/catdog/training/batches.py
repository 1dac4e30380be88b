"""What the training step eats: the pixel cache or cached features, as batches, in a resumable order."""

from __future__ import annotations

import copy
import math
import os
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler, TensorDataset

from catdog.augment import batch_augmenter, sample_seed
from catdog.data import NEITHER, CachedImages, DatasetError, PreparedData, discover, prepare
from catdog.errors import CatdogError
from catdog.features import (
    FeatureStore,
    cache_key,
    extract,
    onnx_feature_fn,
    pooled_part,
    torch_feature_fn,
)
from catdog.fsutil import catdog_command, counted, links_or_folders
from catdog.models.scratch import SCRATCH_MODELS
from catdog.preprocess import Preprocess, normalize
from catdog.training.config import TrainConfig
from catdog.training.distributed import barrier
from catdog.training.precision import autocast, autocast_dtype, logits_of

PADDING = -100  # the label of rows that fill up a last evaluation batch (not images of the split)


def preprocess_for(model: nn.Module, cfg: TrainConfig) -> Preprocess:
    """Scratch nets: ``image_size`` at crop 0.875; timm backbones: their pretrained settings."""
    if cfg.model in SCRATCH_MODELS:
        return Preprocess(image_size=cfg.image_size, crop_pct=0.875, interpolation="bilinear")
    from catdog.models.pretrained import pretrained_preprocess

    pre = pretrained_preprocess(model.backbone if hasattr(model, "backbone") else model)
    return replace(pre, image_size=cfg.image_size) if cfg.image_size else pre


def prepare_data(cfg: TrainConfig, pre: Preprocess, cache_dir: Path, ctx, log) -> PreparedData:
    """Hash and decode every image (rank 0 first); unreadable files are skipped and counted."""
    data = None
    dataset = discover(cfg.data_dir, image_files_only=True)
    if dataset.left_out and ctx.is_main:
        log.info(
            f"left out {counted(len(dataset.left_out), 'image file')} with no label in the {dataset.layout} layout, "
            f"e.g. '{dataset.left_out[0]}'; to list them: {_check_command(cfg.data_dir)}"
        )
    if dataset.skipped and ctx.is_main:
        path, why = dataset.skipped[0]
        log.info(f"did not read {links_or_folders(len(dataset.skipped))}, e.g. '{path}': {why}")
    # The model's classes first, so that their labels are the model's outputs; `neither` photos come last.
    order = dataset.model_classes + [NEITHER] * (NEITHER in dataset.classes)
    if ctx.is_main:
        n_files = len(dataset.files)
        with log.progress("decoding images", n_files) as bar:
            data = prepare(cfg.data_dir, pre, cache_dir, classes=order, progress=lambda n: bar.update(advance=n))
    barrier(ctx)
    if data is None:
        data = prepare(cfg.data_dir, pre, cache_dir, classes=order)
    total = len(data.paths) + len(data.unreadable)
    if not data.paths:
        raise DatasetError(f"None of the {total} image files in '{cfg.data_dir}' can be decoded.")
    if data.unreadable:
        log.info(f"skipped {len(data.unreadable)} of {total} files that cannot be used, e.g. {data.unreadable[0][1]}")
    if ctx.is_main:
        _say_label_conflicts(data, cfg.data_dir, log)
    present = sorted({data.classes[y] for y in data.labels} - {NEITHER})
    if len(present) < 2:
        raise DatasetError(f"Only class '{present[0]}' has usable images in '{cfg.data_dir}'; training needs two.")
    return data


def _say_label_conflicts(data: PreparedData, data_dir: str, log) -> None:
    """One photo filed under two classes (a copy in cats/ and dogs/) is taught as both answers: data check names
    it a label conflict, and train trained on it without a word."""
    classes_of: dict[str, set[int]] = {}
    for digest, label in zip(data.hashes, data.labels):
        classes_of.setdefault(digest, set()).add(label)
    conflicts = [digest for digest, labels in classes_of.items() if len(labels) > 1]
    if not conflicts:
        return
    example = data.paths[data.hashes.index(conflicts[0])]
    names = " and ".join(sorted(data.classes[label] for label in classes_of[conflicts[0]]))
    log.info(
        f"{counted(len(conflicts), 'photo')} filed under more than one class, e.g. '{example}' ({names}): the model "
        f"is taught every answer; to list them (its --quarantine moves them out): "
        f"{_check_command(data_dir)}"
    )


def _check_command(data_dir: str | Path) -> str:
    return catdog_command("data", "check", Path(data_dir)) or "catdog data check on that folder"


class TrainImages(torch.utils.data.Dataset):
    """Training images ``(uint8 CHW, label, seed)``: each with the augmentation seed the sampler gives it."""

    def __init__(self, images: CachedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        image, label = self.images[index]
        return image, label, seed


class CachedBatches:
    """Batches of cached uint8 squares, straight from the pixel cache: the image path's DataLoader.

    On a GPU the split's squares are copied into its memory once; on a CPU each batch is gathered
    from the cache's memory map (64 squares at 128 px: about 4 MB, a millisecond), in the process
    that trains, so no worker process competes with the step for the cores. Training batches
    follow ``sampler`` (whole batches: the few images of a last partial one wait for the next
    epoch's shuffle) and carry each image's augmentation seed; evaluation batches follow ``order``.
    """

    def __init__(self, images: CachedImages, device: torch.device, batch_size: int, sampler=None, *, order=None):
        self.rows = np.asarray(images.rows, dtype=np.int64)
        self.on_gpu = device.type == "cuda"
        if self.on_gpu:
            self.pixels = torch.from_numpy(np.ascontiguousarray(images.pixels()[self.rows])).to(device)
        else:
            self.pixels = images.pixels()  # the memory map: (rows, side, side, 3)
        self.labels = torch.tensor(images.labels, device=device)
        self.batch_size, self.sampler = batch_size, sampler
        self.order = list(range(len(self.rows))) if order is None else order

    @staticmethod
    def fits(train: TrainImages, val: CachedImages, device: torch.device) -> bool:
        """On a GPU: whether both splits take under half of its free memory (the rest is for training)."""
        if device.type != "cuda":
            return True  # a memory map: the page cache holds what fits, the disk the rest
        size = (len(train) + len(val)) * val.side * val.side * 3
        return size < 0.5 * torch.cuda.mem_get_info(device)[0]

    def __len__(self) -> int:
        if self.sampler is None:
            return math.ceil(len(self.order) / self.batch_size)
        return self._training_images(len(self.sampler)) // self.batch_size or 1

    def _training_images(self, available: int) -> int:
        """Whole batches only: a last, smaller batch is one more shape for cuDNN to plan (seconds, once)."""
        whole = available - available % self.batch_size
        return whole or available

    def _squares(self, index: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` uint8, NHWC in memory: the channels_last layout the convolutions read."""
        if self.on_gpu:
            return self.pixels[index].permute(0, 3, 1, 2)
        return torch.from_numpy(self.pixels[self.rows[index.numpy()]]).permute(0, 3, 1, 2)

    def __iter__(self):
        device = self.labels.device
        if self.sampler is None:
            order = torch.tensor(self.order, dtype=torch.long, device=device)
            labels = self.labels[order]
            short = -len(order) % self.batch_size
            if short:
                # The last batch is filled up to the others' size with rows labelled PADDING (evaluate
                # drops them): one batch shape for cuDNN to plan, not two (seconds, the first time on a GPU).
                order = torch.cat([order, order[-1:].expand(short)])
                labels = torch.cat([labels, labels.new_full((short,), PADDING)])
            for start in range(0, len(order), self.batch_size):
                batch = slice(start, start + self.batch_size)
                yield self._squares(order[batch]), labels[batch]
            return
        pairs = list(self.sampler)[: self._training_images(len(self.sampler))]
        order = torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device)
        seeds = np.array([s for _, s in pairs], dtype=np.uint64)
        for start in range(0, len(pairs), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._squares(index), self.labels[index], seeds[start : start + self.batch_size]


class TrainFeatures(torch.utils.data.Dataset):
    """Cached feature vectors ``(features, label, seed)`` for the frozen-backbone head."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        return self.features[index], self.labels[index], seed


def head_columns(train_set: TrainFeatures, val_set: TensorDataset, width: int) -> tuple:
    """The cached rows cut to the pooled features the head reads (the gate's taps follow them)."""
    if train_set.features.shape[1] == width:
        return train_set, val_set
    features, labels = val_set.tensors
    return TrainFeatures(train_set.features[:, :width].contiguous(), train_set.labels), TensorDataset(
        features[:, :width].contiguous(), labels
    )


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that can start mid-epoch and gives each sample a seed.

    It yields ``(index, seed)``; the seed depends on (run seed, epoch, index) only, so the
    augmentation of a sample is the same with any number of workers or processes.
    """

    def __init__(self, dataset, world: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.start = 0  # samples of this rank already consumed in the current epoch

    def __iter__(self):
        indices = list(super().__iter__())[self.start :]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def use_cores() -> None:
    """Give every core of this process's share of the machine to the training step's threads.

    The image path needs no DataLoader workers on a CPU (CachedBatches, augment_batch), and
    torchrun starts each process with one thread (OMP_NUM_THREADS=1), so a rank takes its
    share of the cores here. Workers beside the step cost more than they give: on 2 cores,
    2 threads + 2 workers trained catnet at 12-25 images/s when the machine was busy.
    """
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, cores))


def warm_up(model: nn.Module, pre: Preprocess, cfg: TrainConfig, ctx) -> None:
    """One training and one evaluation step of a copy of the model on random pixels (GPU, this thread).

    A GPU's first steps at each batch shape build cuDNN's execution plans and load their kernels:
    the first epoch of a Lite0 fine-tune on an H200 took 27 s instead of 5. Plans depend on shapes,
    not weights, so a copy can build them while the CPUs decode the photos. PyTorch keeps them per
    thread (the forward pass's in this one, the backward pass's in autograd's device thread), so
    this must run in the thread that trains. A failure is left for the real first step to report.
    """
    device, batch = ctx.device, max(1, cfg.batch_size // ctx.world)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    with suppress(Exception):
        twin = copy.deepcopy(model).to(device, memory_format=memory_format).train()
        x = torch.randn(2 * batch, 3, pre.image_size, pre.image_size, device=device)
        x = x.contiguous(memory_format=memory_format)
        with autocast(device, autocast_dtype(cfg, device)):
            logits_of(twin(x[:batch])).float().sum().backward()
            with torch.no_grad():
                twin.eval()(x)  # the evaluation batches are twice as large
        torch.cuda.synchronize(device)


def image_input(pre: Preprocess, device, channels_last: bool, *, augment: bool = False, eval_view: bool = False):
    """uint8 batch → normalised float input on ``device`` (augmented there first: see augment_batch)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def finish(images: torch.Tensor) -> torch.Tensor:
        return normalize(images, pre, crop=eval_view).contiguous(memory_format=memory_format)

    # On a CPU the colour jitter, normalisation and layout change are compiled into one pass (see
    # batch_augmenter); on a GPU they are a few fast kernels either way.
    augmenter = batch_augmenter(pre.image_size, finish, fuse=torch.device(device).type == "cpu") if augment else None

    def run(images: torch.Tensor, seeds) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        if augmenter:
            return augmenter(images, np.asarray(seeds, dtype=np.uint64))
        return finish(images)

    return run


def feature_input(device, shape: tuple[int, ...] | None, channels_last: bool):
    """Cached rows → float32 input on ``device``: vectors as they are, activation maps reshaped to ``shape``."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def run(rows: torch.Tensor, seeds) -> torch.Tensor:
        x = rows.to(device, non_blocking=True).float()
        return x if shape is None else x.view(len(x), *shape).contiguous(memory_format=memory_format)

    return run


def budget_note(done: list[tuple[int, int]], n_images: int, views: int) -> str:
    """What the time budget left of the training features, images first: "281 of 526 feature vectors" alone
    read as if half the photos were dropped, where every photo had one view and some a second."""
    in_training = len({i for i, _ in done})
    images = f"all {counted(n_images, 'image')}" if in_training == n_images else f"{in_training} of {n_images} images"
    if views > 1:
        asked = f"--feature-views {views} asks for {views} views of each"
        what = f"{len(done)} of {n_images * views} feature vectors ({images}; {asked})"
    else:  # one vector an image: the count of vectors says nothing more
        what = f"the features of {images}"
    return f"time budget: training on {what}; a longer --time-budget computes the rest and reuses the ones cached"


def _missing(jobs: list[tuple[int, int]], data, store: FeatureStore) -> int:
    """How many of ``jobs`` (image, view) have no row in the feature cache."""
    return sum(f"{data.hashes[i]}:{v}" not in store.rows for i, v in jobs)


def cached_features(cfg, data, splits, pre, extractor, cache_dir, ctx, deadline, log):
    """The frozen part's output for val (view 0) and train (``feature_views`` views), from the disk cache.

    Missing features are computed by rank 0 (ONNX Runtime on CPU, PyTorch on a GPU), val
    first, then the training images in hash order (a random-like order), one view after the
    other; under a time budget extraction stops with enough time left to train the head.
    """
    key = cache_key(cfg.model, pre, pooled_part(extractor.taps) if cfg.family() == "frozen" else cfg.freeze)
    # Activation maps are large (about 15,000 values per image): half precision halves cache and memory.
    dtype = np.float32 if cfg.family() == "frozen" else np.float16
    store = FeatureStore(cache_dir, key, dtype, say=log.info if ctx.is_main else None)
    by_hash = sorted(splits["train"], key=lambda i: data.hashes[i])
    val_jobs = [(i, 0) for i in splits["val"]]
    train_jobs = [(i, v) for v in range(max(1, cfg.feature_views)) for i in by_hash]
    kept = max(30.0, 0.1 * (cfg.time_budget or 0) * 60)  # of the budget, to train the head on the features
    if cfg.time_budget and cfg.time_budget * 60 <= kept and _missing(val_jobs, data, store):
        # Refused before the export: the budget leaves the features no time on any run, so "a rerun goes on from
        # the cache" sent a user round the same error, a minute each.
        raise CatdogError(
            f"--time-budget {cfg.time_budget:g} leaves the frozen part's features no time, as its run keeps the last "
            f"{kept:.0f} s of the budget to train the head; raise --time-budget."
        )
    if ctx.is_main:
        stop = None if deadline is None else deadline - kept
        if ctx.device.type == "cuda":
            feature_fn = torch_feature_fn(extractor, ctx.device)
        else:
            onnx_file = cache_dir / "onnx" / f"{key}.onnx"
            if not onnx_file.exists():  # said on every run, it read as if each one exported it again
                log.info("exporting the frozen part to ONNX Runtime (cached for later runs)")
            feature_fn = onnx_feature_fn(extractor, onnx_file, pre.image_size)
        jobs = val_jobs + train_jobs
        with log.progress("frozen-part features", len(jobs)) as bar:
            extract(data, jobs, pre, store, feature_fn, deadline=stop, progress=lambda n: bar.update(advance=n))
    barrier(ctx)
    store.reload()
    missing = _missing(val_jobs, data, store)
    if missing:
        # The count and the cache said: a first run spends much of a short budget exporting the frozen part, and
        # "raise --time-budget" alone did not tell that the same budget may do once the export is cached.
        raise CatdogError(
            f"The time budget ran out before the validation features were computed ({len(val_jobs) - missing} of "
            f"{len(val_jobs)}; the frozen part's export and the features computed are cached, and a rerun goes on "
            "from them); raise --time-budget."
        )
    done = [(i, v) for i, v in train_jobs if f"{data.hashes[i]}:{v}" in store.rows]
    if not done:
        raise CatdogError("The time budget ran out before any training features were computed; raise --time-budget.")
    if len(done) < len(train_jobs):
        log.info(budget_note(done, len(by_hash), max(1, cfg.feature_views)))

    def tensors(jobs):
        feats = torch.from_numpy(store.read([f"{data.hashes[i]}:{v}" for i, v in jobs]))
        return feats, torch.tensor([data.labels[i] for i, _ in jobs])

    return TrainFeatures(*tensors(sorted(done))), TensorDataset(*tensors(val_jobs))
