"""The model, the micro-batcher and the thread pools of one running app (:class:`ServeState`)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile

from catdog import __version__
from catdog.fsutil import printable, utf8_safe
from catdog.images import ImageError, ImageTooLargeError, tenths_up, with_name
from catdog.inference.predictor import Prediction, Predictor
from catdog.models.files import has_heat_maps
from catdog.preprocess import stack_uint8
from catdog.serve.batcher import MicroBatcher
from catdog.serve.metrics import ServeMetrics
from catdog.serve.settings import ApiError, ServeSettings

log = logging.getLogger("catdog.serve")

MODEL_LOADING = "The model is still loading; try again in a few seconds."
MODEL_FAILED_TO_LOAD = (
    "The model could not be loaded (catdog serve's log says why); restart it with a model that loads."
)


def photo_too_large(settings: ServeSettings, name: str, size: int) -> str:
    """The refusal of a photo over --max-file-mb, the same on every route (and in the examples of /docs)."""
    return f"'{name}' is {tenths_up(size)} MB, over the {settings.max_file_bytes / 1e6:g} MB limit for one photo."


def limits(settings: ServeSettings) -> dict[str, int]:
    """The limits a client keeps to, as ``GET /api/v1/model`` tells them."""
    return {
        "max_file_bytes": settings.max_file_bytes,
        "max_pixels": settings.max_pixels,
        "max_files": settings.max_files,
    }


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


class ServeState:
    """The model, the micro-batcher and the thread pools of one running app."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self.model_info: dict[str, Any] = {}
        self._answered = 0  # photos answered or refused, so the trimmer knows when memory was freed
        threads = settings.decode_threads or os.cpu_count() or 1
        self.decode_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="catdog-decode")
        # Photos read into memory and decoding at once, server-wide: a batch's other uploads wait in their
        # spool files (Starlette keeps a part over 1 MB on disk), not all in memory (32 x 10 MB a request).
        self.decoding = asyncio.Semaphore(2 * threads)

    async def load(self) -> None:
        """Load the model in a thread (the server answers /healthz and /readyz meanwhile)."""
        try:
            predictor = await asyncio.to_thread(self._load_and_warm_up)
        except Exception as err:  # reported by /readyz and every API call; the server stays up
            self.load_error = str(err) or type(err).__name__
            # On one line, a name that is not UTF-8 as '\xe9' (as every command prints it), not '\udce9'.
            log.error("The model could not be loaded: %s", printable(self.load_error))
            return
        self.model_info = describe_model(predictor)
        self.metrics.model.info({k: str(self.model_info[k]) for k in ("name", "architecture", "version")})
        self.batcher = MicroBatcher(
            predictor,
            max_batch=self.settings.max_batch,
            max_wait=self.settings.max_wait_ms / 1000,
            on_batch=self.metrics.observe_batch,
        )
        self.batcher.start()
        self.predictor = predictor
        self.metrics.ready.set(1)
        log.info("Model '%s' loaded; ready.", printable(predictor.name))

    def _load_and_warm_up(self) -> Predictor:
        predictor = Predictor.load(
            self.settings.model,
            threshold=self.settings.threshold,
            neither_threshold=self.settings.neither_threshold,
            max_pixels=self.settings.max_pixels,
        )
        # One forward pass now, so that the first request does not pay for lazy initialisation.
        side = predictor.pre.resize_size
        predictor.forward_uint8(stack_uint8([np.zeros((side, side, 3), np.uint8)]))
        return predictor

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> tuple[Predictor, MicroBatcher]:
        if self.load_error is not None:
            # 500, not 503: a load that failed stays failed until the server is restarted, and a client told
            # "unavailable" (the page, the phone app, a load balancer's retries) would ask again in vain. Why is
            # for the log (load said it): it names the model's files on this machine, which no client is told.
            raise ApiError(500, MODEL_FAILED_TO_LOAD)
        if self.predictor is None or self.batcher is None:
            raise ApiError(503, MODEL_LOADING, {"Retry-After": "2"})
        return self.predictor, self.batcher

    async def classify(self, name: str, data: bytes | UploadFile) -> Prediction:
        """One photo (its bytes, or an upload read only when its turn to decode comes) → Prediction; raises
        :class:`ImageError` (message naming ``name``) for unusable input."""
        predictor, batcher = self.ready()
        self._check_size(name, len(data) if isinstance(data, bytes) else data.size)
        try:
            async with self.decoding:
                batcher.expect()  # its square comes soon: the batcher may wait for it (not while it queues here)
                try:
                    if isinstance(data, UploadFile):
                        data = await data.read()
                        self._check_size(name, len(data))  # a part that declared no size
                    square = await asyncio.get_running_loop().run_in_executor(self.decode_pool, predictor._square, data)
                except BaseException as err:
                    batcher.unexpect()
                    if isinstance(err, ImageError):
                        raise type(err)(with_name(str(err), name)) from None
                    raise
                del data  # what waits for the model is the square, not the photo's bytes
            return await batcher.predict(square, name, expected=True)
        finally:
            self._answered += 1

    def _check_size(self, name: str, size: int | None) -> None:
        if size is not None and size > self.settings.max_file_bytes:
            raise ImageTooLargeError(photo_too_large(self.settings, name, size))

    async def trim_memory(self, period: float = 1.0) -> None:
        """Hand freed memory back to the OS once a second while photos come in, and once after the last.

        Decode and inference threads free large temporary buffers into glibc's per-thread arenas,
        which keep them: without the trim the server's RSS creeps up by tens of MiB per few hundred
        odd-sized uploads. Trimming here rather than after each photo means the buffers that the
        last batch freed are trimmed too, and a busy server trims at most once a period.
        """
        if _MALLOC_TRIM is None:
            return
        trimmed_at = 0
        while True:
            await asyncio.sleep(period)
            if self._answered != trimmed_at:
                trimmed_at = self._answered
                await asyncio.to_thread(_MALLOC_TRIM, 0)


def describe_model(predictor: Predictor) -> dict[str, Any]:
    """What ``GET /api/v1/model`` answers: classes, architecture, metrics, version."""
    info = predictor.info
    digest = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:12]
    labels = predictor.answers
    if predictor.threshold is not None:
        labels.append("unsure")
    name = predictor.name if predictor.name == "builtin" else os.path.basename(os.path.normpath(predictor.name))
    return {
        "name": utf8_safe(name),  # a name that is not UTF-8 as '\xe9': its lone surrogate failed the answer (500)
        "classes": list(predictor.classes),
        "labels": labels,
        "architecture": info.get("architecture", "unknown"),
        "backend": info.get("backend", "torch"),
        "image_size": predictor.pre.image_size,
        "neither_threshold": predictor.gate_threshold,
        "heat_maps": has_heat_maps(predictor.name),  # the page offers no heat map where every one would fail
        "metrics": info.get("metrics", {}),
        "version": str(info.get("version") or digest),
        "catdog_version": __version__,
    }
