"""Admission control for the HTTP server: micro-batching of /recommend and a bounded encode queue.

Both live on the server's event loop (single-threaded: plain counters need no locks) and hand the
heavy work to threads.

:class:`MicroBatcher` -- concurrent ``/recommend`` requests are collected for at most ``max_wait``
seconds (counted from the oldest waiting request) or until ``max_batch`` of them wait, then run as
one :meth:`Recommender.recommend_batch` call (one sequence-encoder forward per length group, one
matmul) in a dedicated worker thread; each request's future gets its own answer. While a batch runs,
the next one collects, so under load batches form without any waiting. The ``max_wait`` pause is
only taken while requests arrive together (the previous batch held more than one): a lone client
pays nothing for it. One worker: on a small CPU the event loop (HTTP parsing, JSON) needs the other
core.

:class:`EncodeGate` -- requests that run the text encoder (``POST /items``, ``/recommend`` with
``item_texts`` of unknown items) take one of ``concurrency`` slots; at most ``queue`` more may wait.
Beyond that they are refused at once with :class:`ServerBusy` (HTTP 503 + ``Retry-After``), so a
burst of expensive requests cannot pile up threads, memory and minutes of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


class ServerBusy(Exception):
    """Too much work is already queued; the client should retry after ``retry_after`` seconds."""

    def __init__(self, what: str, retry_after: int = 1):
        super().__init__(what)
        self.retry_after = retry_after


@dataclass
class Job:
    """One /recommend request waiting for a batch."""

    history: list[str]
    k: int
    exclude_seen: bool
    future: asyncio.Future
    arrived: float


class MicroBatcher:
    """Collects concurrent requests into batches for ``run_batch(jobs) -> results``.

    ``run_batch`` runs in the worker thread and returns one result per job, either the answer or
    the exception that job should raise (so one bad request cannot fail the others).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Job]], list[Any]],
        max_batch: int = 64,
        max_wait: float = 0.002,
        max_pending: int = 1024,
    ):
        if max_batch < 1 or max_wait < 0 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_pending = max_pending
        self._pending: list[Job] = []
        self._drainer: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="unisrec-batch")
        self._last_size = 0
        self.batches = 0  # statistics (tests, /health)
        self.requests = 0
        self.largest = 0

    async def submit(self, history: list[str], k: int, exclude_seen: bool) -> Any:
        if len(self._pending) >= self.max_pending:
            raise ServerBusy(f"{len(self._pending)} recommendation requests are already waiting")
        loop = asyncio.get_running_loop()
        job = Job(history, k, exclude_seen, loop.create_future(), time.monotonic())
        self._pending.append(job)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if len(self._pending) < self.max_batch and self._last_size > 1:
                # requests have been arriving together: give this batch a moment to fill up
                delay = self._pending[0].arrived + self.max_wait - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch = [j for j in self._pending[: self.max_batch] if not j.future.done()]  # done = client gone
            del self._pending[: self.max_batch]
            if not batch:
                continue
            self._last_size = len(batch)
            self.batches += 1
            self.requests += len(batch)
            self.largest = max(self.largest, len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, batch)
            except Exception as exc:  # run_batch isolates per-job errors; this is a bug or shutdown
                results = [exc] * len(batch)
            for job, result in zip(batch, results):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class EncodeGate:
    """At most ``concurrency`` encodes at once and ``queue`` waiting; more raise :class:`ServerBusy`."""

    def __init__(self, concurrency: int = 1, queue: int = 8):
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue
        self._semaphore: asyncio.Semaphore | None = None
        self.admitted = 0  # running + waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.admitted >= self.concurrency + self.queue:
            raise ServerBusy(f"{self.admitted} text-encoding requests are already running or waiting")
        if self._semaphore is None:  # created on first use, inside the server's event loop
            self._semaphore = asyncio.Semaphore(self.concurrency)
        self.admitted += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self.admitted -= 1
