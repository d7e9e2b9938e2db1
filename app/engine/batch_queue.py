"""Dynamic batching: work items from all concurrent requests share forward passes.

:class:`BatchQueue` is the machinery, whatever the items: the pose stage
(:class:`app.engine.pose_batcher.Batcher`, person crops) and the person-detector stage
(:class:`app.engine.detector_batcher.DetectorBatcher`, whole images) are its two users, each with
its own batch size, queue limit and metrics.

Requests submit their crops (one *job* per request, all its images together).
A collector coroutine on the event loop forms batches of up to ``max_batch_size`` crops, waiting
at most ``max_queue_delay_s`` after the oldest queued crop for the batch to fill. While the worker
is busy with the previous batch the next one fills up meanwhile; when it comes free, crops that
are already waiting are held ``max(max_queue_delay_s, 2% of a batch's time)`` longer, so that
the requests the last batch just answered can rejoin (otherwise concurrent clients split into
alternating half batches; BENCHMARKS.md, "Throughput against the raw network").
Each batch runs on a dedicated worker thread: ``run_batch`` (the forward pass) then ``decode``.

Several devices (``HEATPOSE_DEVICE=cuda:0,cuda:1``, :mod:`app.devices`): one queue, one
worker per device, each with its own model replica and at most one batch in flight. A batch is
formed when a worker is free and goes to the least-loaded free worker: no batch in flight, a worker
whose last batch succeeded before one whose last batch failed, then the one idle longest (so
batches alternate between equally healthy devices). One device alone is a single worker.
Per worker, ``heatpose_device_batch_size{device=...}`` (and ``heatpose_detector_...``) counts
its batches and their sizes.

Failures are the domain exceptions of :mod:`app.engine.failures` (``app.http.errors`` alone turns
them into HTTP answers):

- Queue full -> :class:`QueueFull` (with a retry delay); more crops than the queue can ever
  hold -> :class:`OverCapacity`. Deadline-aware admission: a job whose items would be answered
  only after its deadline, at the time per item this stage measured recently
  (:meth:`BatchQueue.expected_wait_s`), is refused at once with :class:`QueueFull` too
  (``heatpose_stage_expected_wait_seconds{stage=...}`` in ``/metrics``). Past its deadline a
  job fails with :class:`DeadlineExceeded` and its crops that are still queued are dropped
  before they reach the model; a job cancelled while waiting (the client disconnected) has its
  crops removed from the queue at once. Both
  are counted in ``heatpose_dropped_crops_total{reason="deadline"|"cancelled"}``.
- An exception in a batch is isolated: the batch is retried in halves until the failing inputs
  are found (:mod:`app.engine.isolation`); only their jobs fail (:class:`BatchFailed`), the others
  get their results, and the loop goes on with every device (one whose whole last batch failed is
  picked last while a healthy one is free); CUDA out-of-memory splits the batch in halves too.
- :attr:`BatchQueue.alive` is false once the loop has died (``/ready`` reports it); jobs then fail
  with :class:`NotServing`.
- :meth:`BatchQueue.drain` refuses new jobs and waits for the queued ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.devices import worker_labels
from app.engine.failures import BatchFailed, DeadlineExceeded, NotServing, OverCapacity, QueueFull
from app.engine.isolation import run_isolated
from app.observability.metrics import Metrics, StageMetrics

log = logging.getLogger("heatpose.batcher")


Out = TypeVar("Out")


@dataclass
class _Job(Generic[Out]):
    items: Any  # N items, indexable (the pose stage: Crops; the detector stage: images)
    params: Any  # what the stage needs besides the items (flip, decode mode, thresholds, ...)
    deadline: float  # time.monotonic()
    future: asyncio.Future[list[Out]]
    enqueued: float = field(default_factory=time.monotonic)
    results: list[Out | None] = field(default_factory=list)
    remaining: int = 0

    def dead(self, now: float) -> bool:
        return self.future.done() or now >= self.deadline


Entry = tuple[_Job[Any], int]


@dataclass
class _Worker:
    """One device's worker: its model replica, its thread and its load."""

    label: str  # the metrics label (app.devices.worker_labels)
    replica: Any  # what the stage's _run needs on this device
    executor: ThreadPoolExecutor
    inflight: int = 0  # batches running (0 or 1)
    failed: bool = False  # its last batch raised
    free_since: float = 0.0  # time.monotonic() when its last batch ended
    busy_since: float = 0.0  # time.monotonic() when its batch in flight began
    busy_items: int = 0  # the items of that batch

    def load(self) -> tuple[int, bool, float]:
        """Sort key: the least-loaded worker first (see the module docstring)."""
        return self.inflight, self.failed, self.free_since


class BatchQueue(Generic[Out]):
    """Collects items into batches and runs them on one worker thread per device (see module
    docstring).

    Subclasses give :meth:`_run` (one batch of ``(job, index)`` entries and the replica of the
    worker's device, on the worker thread -> one output per entry) and a typed ``submit``
    calling :meth:`_submit`.

    Args:
        replicas: per worker ``(device, replica)``: what :meth:`_run` gets on that device.
        max_batch_size: items in one batch; ``max_queue_delay_s``: longest wait for a batch to
            fill after its first item; ``max_queued``: items waiting, beyond it QueueFull.
        stage: this stage's histograms and gauges (``metrics.pose`` or ``metrics.detector``).
        unit: what the items are, in messages (``person crops``).
        limit_setting: the setting that sets ``max_queued``, named when a request can never fit.
    """

    def __init__(
        self,
        *,
        replicas: Sequence[tuple[str, Any]],
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queued: int,
        metrics: Metrics | None = None,
        stage: StageMetrics | None = None,
        unit: str = "items",
        limit_setting: str = "the queue limit",
        thread_name: str = "heatpose-batch",
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queued = max_queued
        self.metrics = metrics or Metrics()
        self.stage = stage or self.metrics.pose
        self.stage_name = "detector" if self.stage is self.metrics.detector else "pose"
        self.admission = self.metrics.expected_wait_seconds  # labelled by stage_name
        self.unit = unit
        self.limit_setting = limit_setting
        if not replicas:
            raise ValueError("a batcher needs at least one device")
        labels = worker_labels([d for d, _ in replicas])
        self._workers = [
            _Worker(label, r, ThreadPoolExecutor(1, thread_name_prefix=f"{thread_name}-{label}"))
            for label, (_, r) in zip(labels, replicas, strict=True)
        ]
        self._queue: collections.deque[Entry] = collections.deque()
        self._wakeup = asyncio.Event()
        self._free_since = 0.0  # time.monotonic() when a worker last finished a batch
        self._accepting = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._batch_s = 0.0  # running estimate of one batch's time on the worker
        self._pace_s: float | None = None  # running estimate of the time per item (admission)
        self._inflight_items = 0  # items in the batches on the workers now
        self.died: BaseException | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the collector on the running event loop; jobs are accepted from now on."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="heatpose-batcher")
        self._accepting = True

    @property
    def alive(self) -> bool:
        """True while the collector loop runs (false before start, after stop, or if it died)."""
        return self._task is not None and not self._task.done() and self.died is None

    @property
    def queued(self) -> int:
        """Crops waiting for a forward pass."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Items in the batches running on the workers now."""
        return self._inflight_items

    @property
    def devices(self) -> list[str]:
        """Each worker's label (its device; ``device/k`` where one repeats)."""
        return [w.label for w in self._workers]

    @property
    def _busy(self) -> bool:
        return any(w.inflight for w in self._workers)

    def _free_worker(self) -> _Worker | None:
        """The least-loaded worker with no batch in flight, or ``None``."""
        best = min(self._workers, key=_Worker.load)
        return best if best.inflight == 0 else None

    async def drain(self, timeout: float) -> bool:
        """Refuse new jobs, let queued and running ones finish (up to ``timeout`` s), stop.

        Returns:
            True if everything finished in time; jobs still waiting then get 503.
        """
        self._accepting = False
        end = time.monotonic() + timeout
        while (self._queue or self._busy) and time.monotonic() < end and self.alive:
            await asyncio.sleep(0.01)
        clean = not self._queue and not self._busy
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=max(0.1, end - time.monotonic()))
        self._fail_all(NotServing("the service is shutting down", state="shutting_down"))
        for w in self._workers:
            w.executor.shutdown(wait=False, cancel_futures=True)
        return clean

    # ---------------------------------------------------------------- submit
    async def _submit(self, items: Any, params: Any, *, deadline: float) -> list[Out]:
        """Queue one request's ``len(items)`` items and wait for their outputs, in order.

        Raises:
            NotServing: not started, draining or dead. QueueFull: no room for the items.
            DeadlineExceeded: the deadline passed. BatchFailed: the batch raised.
        """
        n = len(items)
        if n == 0:
            return []
        if not self._accepting or not self.alive:
            raise NotServing("the model is not serving (starting, stopping or failed)")
        self.check_room(n, deadline=deadline)
        loop = asyncio.get_running_loop()
        job: _Job[Out] = _Job(
            items=items,
            params=params,
            deadline=deadline,
            future=loop.create_future(),
            results=[None] * n,
            remaining=n,
        )
        self._queue.extend((job, i) for i in range(n))
        self.stage.queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            return await asyncio.wait_for(job.future, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.metrics.rejected.labels("timeout").inc()
            raise DeadlineExceeded(
                "the request passed its deadline before the model finished "
                "(HEATPOSE_REQUEST_TIMEOUT_S)"
            ) from None
        finally:
            if not job.future.done():
                job.future.cancel()
            if job.future.cancelled():  # deadline, or the request was cancelled (app.http.gate does
                self._remove(job)  # on a disconnect): its queued crops never reach the model

    def check_room(self, n: int, *, deadline: float | None = None) -> None:
        """Refuse ``n`` more items now (:class:`QueueFull`) or ever (:class:`OverCapacity`).

        Routes call it (through the service) before decoding anything, so shedding is cheap.
        With a ``deadline`` (``time.monotonic()``), items that cannot be answered before it at
        the recently measured pace (:meth:`expected_wait_s`) behind the work ahead are refused
        too (QueueFull: a quick 503 with ``Retry-After`` instead of a 504 when the deadline has
        passed). An idle stage takes the request whatever the estimate, so a stale estimate is
        measured again.
        """
        if n > self.max_queued:
            self.metrics.rejected.labels("over_capacity").inc()
            raise OverCapacity(
                f"this request has {n} {self.unit} but at most {self.max_queued} can be queued "
                f"({self.limit_setting}): send fewer images or boxes per request"
            )
        if len(self._queue) + n > self.max_queued:
            per_crop = (self._pace_s or 0.05) / len(self._workers)  # workers run side by side
            retry = max(1, math.ceil(len(self._queue) * per_crop))
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"{len(self._queue)} {self.unit} are queued (limit {self.max_queued}); "
                f"this request adds {n}. Retry after {retry} s",
                retry_after=retry,
            )
        wait = self.expected_wait_s(n)
        self.admission.labels(self.stage_name).set(self.expected_wait_s(0))
        ahead = len(self._queue) + self._inflight_items  # an idle stage always takes the
        if deadline is not None and ahead and wait > deadline - time.monotonic():  # (re)measure
            left = max(0.0, deadline - time.monotonic())
            retry = max(1, math.ceil(self.expected_wait_s(0)))
            self.metrics.rejected.labels("deadline_unreachable").inc()
            raise QueueFull(
                f"{len(self._queue)} {self.unit} are queued: about {wait:.1f} s until this "
                f"request's {n} would be answered at the recently measured pace "
                f"({self.pace_s():.3f} s per item), but its "
                f"deadline is {left:.1f} s away (HEATPOSE_REQUEST_TIMEOUT_S). "
                f"Retry after {retry} s",
                retry_after=retry,
            )

    def expected_wait_s(self, n: int) -> float:
        """Seconds until ``n`` more items would be answered: the items ahead of them (queued
        and in flight) and their own, at the recently measured time per item (a running
        average over batches, :meth:`seed_pace` before the first; at least the time per item
        a batch still running has taken so far), shared by the workers; 0 until a pace is
        known. Exact where a batch costs in proportion to its items (CPU);
        high after small batches where it does not (GPU), until full batches are measured.
        """
        items = len(self._queue) + self._inflight_items + n
        return items * self.pace_s() / len(self._workers)

    def pace_s(self) -> float:
        """Seconds per item for :meth:`expected_wait_s` (0 until known)."""
        now = time.monotonic()
        running = [(now - w.busy_since) / w.busy_items for w in self._workers if w.inflight]
        return max([self._pace_s or 0.0, *running])  # a batch running long is evidence too

    def seed_pace(self, seconds_per_item: float) -> None:
        """Start :meth:`expected_wait_s` from a known time per item (before any batch is
        measured the stage admits whatever the deadline)."""
        if self._pace_s is None and seconds_per_item > 0:
            self._pace_s = seconds_per_item

    def _remove(self, job: _Job) -> None:
        """Take a cancelled job's crops out of the queue (counted as dropped)."""
        kept = [e for e in self._queue if e[0] is not job]
        dropped = len(self._queue) - len(kept)
        if dropped:
            self._queue = collections.deque(kept)
            reason = "deadline" if time.monotonic() >= job.deadline else "cancelled"
            self.metrics.dropped_crops.labels(reason).inc(dropped)
            self.metrics.queue_depth.set(len(self._queue))
            self._wakeup.set()

    # ---------------------------------------------------------------- collector
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = await self._gather()
                if batch is None:
                    return
                worker = self._free_worker()
                assert worker is not None  # _gather returns when one is free
                worker.inflight += 1
                self._inflight_items += len(batch)
                worker.busy_since, worker.busy_items = time.monotonic(), len(batch)
                fut = loop.run_in_executor(worker.executor, self._process, batch, worker)
                fut.add_done_callback(
                    lambda f, b=batch, w=worker: self._finish(b, w, f)  # type: ignore[misc]
                )
        except Exception as e:
            self.died = e
            log.exception("the batcher loop died; /ready is false from now on")
            self._fail_all(NotServing(f"the batcher stopped: {e!r}", state="failed"))

    async def _wait(self, timeout: float | None) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _drop_dead_front(self) -> None:
        now = time.monotonic()
        while self._queue and self._queue[0][0].dead(now):
            self._expire(self._queue.popleft()[0], now)

    def _expire(self, job: _Job, now: float) -> None:
        """Drop one queued crop of a dead job (failed, cancelled or past its deadline)."""
        self.metrics.dropped_crops.labels("deadline" if now >= job.deadline else "cancelled").inc()
        if not job.future.done():
            job.future.set_exception(DeadlineExceeded("deadline passed while queued"))

    async def _gather(self) -> list[Entry] | None:
        """Wait for a batch worth dispatching and a free worker; None when stopping."""
        while True:
            self._wakeup.clear()
            self._drop_dead_front()
            if self._stopping and not self._busy:
                return None
            if not self._queue or self._stopping:
                await self._wait(None)
                continue
            # Wait for more crops until `delay` after the oldest one arrived or a hold after the
            # worker came free, whichever is later: under load, the clients answered by the
            # previous batch can rejoin instead of being split into a batch of their own.
            # The hold after the worker came free is at least 2% of a forward pass, so long
            # (CPU) batches keep their clients together at a cost of at most ~2% throughput.
            hold = max(self.max_queue_delay_s, 0.02 * self._batch_s)
            dispatch_at = max(
                self._queue[0][0].enqueued + self.max_queue_delay_s, self._free_since + hold
            )
            now = time.monotonic()
            ready = len(self._queue) >= self.max_batch_size or now >= dispatch_at
            if ready and self._free_worker() is not None:
                break
            await self._wait(None if ready else dispatch_at - now)
        batch: list[Entry] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch_size:
            job, i = self._queue.popleft()
            if job.dead(now):
                self._expire(job, now)
                continue
            batch.append((job, i))
            self.stage.queue_wait_seconds.observe(now - job.enqueued)
        self.stage.queue_depth.set(len(self._queue))
        return batch or await self._gather()

    # ---------------------------------------------------------------- worker thread
    def _run(self, batch: list[Entry], replica: Any) -> list[Out]:
        """On the worker thread of ``replica``'s device: one output per entry of ``batch``."""
        raise NotImplementedError

    def _process(self, batch: list[Entry], worker: _Worker) -> list[Out | Exception]:
        """Runs on the worker thread: the stage's :meth:`_run`, timed and counted; a batch that
        raises is retried in halves (:func:`app.engine.isolation.run_isolated`), so an entry's
        result is its output or the exception its own input raised."""
        t0 = time.perf_counter()
        results = run_isolated(lambda part: self._run(part, worker.replica), batch)
        dt = time.perf_counter() - t0
        self.stage.batch_size.observe(len(batch))
        self.stage.device_batch_size.labels(worker.label).observe(len(batch))
        self.stage.inference_seconds.observe(dt)
        self.stage.items.inc(len(batch))
        self._batch_s = 0.8 * self._batch_s + 0.2 * dt
        per_item = dt / len(batch)
        self._pace_s = per_item if self._pace_s is None else 0.8 * self._pace_s + 0.2 * per_item
        self.metrics.item_seconds.labels(self.stage_name).set(self._pace_s)
        return results

    def _finish(
        self, batch: list[Entry], worker: _Worker, fut: asyncio.Future[list[Out | Exception]]
    ) -> None:
        """On the event loop: hand each entry's result to its job; an entry whose input failed
        (:meth:`_process`) fails its own job only."""
        worker.inflight -= 1
        self._inflight_items -= len(batch)
        worker.free_since = self._free_since = time.monotonic()
        self._wakeup.set()
        if fut.cancelled():
            return
        exc = fut.exception()
        results: list[Any] = [exc] * len(batch) if exc is not None else fut.result()
        failed = [r for r in results if isinstance(r, BaseException)]
        worker.failed = len(failed) == len(batch)  # the device, not one input, is suspect
        if failed:
            self.metrics.batch_failures.inc()
            log.error(
                "%d of a batch of %d %s on %s failed: %r",
                len(failed),
                len(batch),
                self.unit,
                worker.label,
                failed[0],
                exc_info=failed[0],
            )
        for (job, i), result in zip(batch, results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                err = BatchFailed(
                    f"the inference of this request's input failed "
                    f"({type(result).__name__}: {result}); the other requests of its batch "
                    "were answered"
                )
                err.__cause__ = result
                job.future.set_exception(err)
                continue
            job.results[i] = result
            job.remaining -= 1
            if job.remaining == 0:
                job.future.set_result([r for r in job.results if r is not None])

    def _fail_all(self, err: Exception) -> None:
        while self._queue:
            job, _ = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(err)
        self.stage.queue_depth.set(0)
