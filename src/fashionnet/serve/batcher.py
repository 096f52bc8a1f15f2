"""Dynamic batching: concurrent requests' images gathered into one forward pass.

The way Triton and TorchServe batch: the first waiting request opens a batch, which takes every
image already queued and then waits at most `max_wait` seconds for more, up to `max_batch`
images (a request's images are never split: one that would overflow the batch opens the next,
and only a request larger than `max_batch` makes a batch larger), but only while more are on
their way. The forward pass runs on one worker thread (NumPy's BLAS uses the cores itself), off
the event loop, so requests keep being read while the model works; the next batch gathers
meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 images (n, h, w) -> probabilities (n, k)


class Batcher:
    def __init__(self, predict: Predict, *, max_batch: int = 64, max_wait: float = 0.005) -> None:
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fashionnet-forward")
        self.on_batch: Callable[[int], None] = lambda n: None  # told each batch's size
        self.coming = 0  # requests being read or prepared, which will be submitted soon

    def start(self) -> None:
        """Begin batching on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=True)

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        """The class probabilities of `images`, computed in some batch."""
        loop = asyncio.get_running_loop()
        if self.max_batch <= 1 or self._queue is None:  # batching off: a pass per request
            self.on_batch(len(images))
            return await loop.run_in_executor(self._pool, self.predict, images)
        done: asyncio.Future[np.ndarray] = loop.create_future()
        await self._queue.put((images, done))
        return await done

    async def _run(self) -> None:
        """Gather a batch: what is queued, then what arrives while requests are still being read
        or prepared (`coming`), for at most `max_wait`. A lone request at low load is not kept
        waiting for company that is not on its way."""
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        carry = None  # a request that did not fit the last batch: it opens the next one
        while True:
            batch = [carry if carry is not None else await queue.get()]
            carry, size = None, len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                if queue.empty():
                    await asyncio.sleep(0)  # let handlers whose bytes have arrived run first
                if queue.empty() and self.coming == 0:
                    break
                left = deadline - loop.time()
                if queue.empty() and left <= 0:
                    break
                try:
                    item = queue.get_nowait() if not queue.empty() else (
                        await asyncio.wait_for(queue.get(), left))  # fmt: skip
                except TimeoutError:
                    break
                if size + len(item[0]) > self.max_batch:  # never over max_batch, never split
                    carry = item
                    break
                batch.append(item)
                size += len(item[0])
            await self._forward(batch, size)

    async def _forward(
        self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], size: int
    ) -> None:
        self.on_batch(size)
        images = batch[0][0] if len(batch) == 1 else np.concatenate([b[0] for b in batch])
        try:
            probs = await asyncio.get_running_loop().run_in_executor(
                self._pool, self.predict, images
            )
        except Exception as e:
            for _, done in batch:
                if not done.done():
                    done.set_exception(e)
            return
        start = 0
        for part, done in batch:
            if not done.done():  # a client that went away cancelled its future
                done.set_result(probs[start : start + len(part)])
            start += len(part)
