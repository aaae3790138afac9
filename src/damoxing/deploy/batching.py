"""MicroBatcher: concurrent requests' rows gathered into one forward pass.

Each request puts its rows on an asyncio queue (created inside the app's lifespan, on its event
loop) and awaits a future. One worker task takes the first waiting request, then keeps taking
requests until `max_batch` rows are gathered or `max_wait_ms` has passed, runs the model once on
all of them in a thread, and hands each request its own slice of the results.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class _Job:
    items: list
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """`await batcher.submit(items)` -> `fn(all items of the batch)`'s results for `items`.

    Args:
        fn: list of items -> list of results, one per item (runs in a worker thread).
        max_batch: most items in one call of fn (a request with more runs alone).
        max_wait_ms: how long the first request of a batch waits for others (0: take only those already queued).
        on_batch: called with each batch's size (for metrics).
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 64, max_wait_ms: float = 1.0,
                 on_batch: Optional[Callable[[int], Any]] = None):
        self.fn, self.max_batch, self.max_wait = fn, max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self.queue: Optional[asyncio.Queue] = None
        self.worker: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
            self.worker = None

    async def submit(self, items: list) -> list:
        if self.queue is None:
            raise RuntimeError("MicroBatcher.submit before start (the app's lifespan starts it)")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(list(items), future))
        return await future

    async def _gather(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        size = len(jobs[0].items)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch:
            try:
                if self.queue.empty():
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    job = await asyncio.wait_for(self.queue.get(), left)
                else:
                    job = self.queue.get_nowait()
            except asyncio.TimeoutError:
                break
            if size + len(job.items) > self.max_batch:
                self.queue.put_nowait(job)  # it starts the next batch
                break
            jobs.append(job)
            size += len(job.items)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            await self._run_jobs(jobs)

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # a cancelled request (client gone) is skipped
        if not jobs:
            return
        items = [item for job in jobs for item in job.items]
        if self.on_batch is not None:
            self.on_batch(len(items))
        try:
            results = await asyncio.to_thread(self.fn, items)
        except Exception as e:  # each waiting request gets the error, the worker keeps serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[start:start + len(job.items)])
            start += len(job.items)
