"""Micro-batching: concurrent requests share one forward pass.

Each request decodes its photo (in a thread pool), then hands the preprocessed square to
:class:`MicroBatcher`. The batcher takes the first waiting square, gathers more for at most
``max_wait`` seconds or until ``max_batch`` squares, and runs one forward pass in its own
model thread, so CPU-bound inference never blocks the event loop. While that pass runs, new
squares queue up and form the next, larger batch: throughput grows with load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from catdog.inference.predictor import Prediction, Predictor
from catdog.preprocess import stack_uint8

log = logging.getLogger("catdog.serve")


class ModelFailedError(Exception):
    """The model raised during a forward pass: a fault of the server, not of the photo (answered 500)."""


@dataclass
class _Item:
    square: np.ndarray
    name: str
    future: asyncio.Future


class MicroBatcher:
    """Groups squares from concurrent requests into forward passes of up to ``max_batch``."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch: int = 32,
        max_wait: float = 0.005,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        # One model thread: the backend sees one batch at a time and uses its own intra-op threads.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catdog-model")
        self._task: asyncio.Task | None = None
        self._expected = 0  # requests still decoding, whose squares will arrive soon

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="catdog-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._model_thread.shutdown(wait=True)

    def expect(self) -> None:
        """Announce a request that is decoding; the batcher waits for it (up to ``max_wait``)."""
        self._expected += 1

    def unexpect(self) -> None:
        """The announced request will not come (its photo could not be decoded)."""
        self._expected = max(0, self._expected - 1)

    async def predict(self, square: np.ndarray, name: str, *, expected: bool = False) -> Prediction:
        """The Prediction for one preprocessed square (``expected`` when :meth:`expect` was called)."""
        if expected:
            self.unexpect()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(square, name, future))
        return await future

    async def _gather(self) -> list[_Item]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            # Only wait when another request is on its way: a lone request goes at once.
            if remaining <= 0 or self._expected == 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [item for item in batch if not item.future.done()]  # drop requests that timed out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                predictions = await loop.run_in_executor(self._model_thread, self._forward, batch)
            except Exception as err:  # a model failure fails this batch's requests, not the server
                names = ", ".join(item.name for item in batch)
                first = (str(err).strip().splitlines() or [""])[0][:300] or type(err).__name__
                log.error(
                    "The model failed on a batch of %d (%s): %s: %s", len(batch), names, type(err).__name__, first
                )
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(
                            ModelFailedError(
                                f"The model failed on '{item.name}' (a fault of the server, not of the photo; "
                                "the server's log says more)."
                            )
                        )
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for item, prediction in zip(batch, predictions):
                if not item.future.done():
                    item.future.set_result(prediction)

    def _forward(self, batch: list[_Item]) -> list[Prediction]:
        outputs = self.predictor.forward_uint8(stack_uint8([item.square for item in batch]))
        return self.predictor.to_predictions(outputs, [item.name for item in batch], source_key="filename")
