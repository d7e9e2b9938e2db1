"""The open ``WS /v1/stream`` connections of one app: admission, drain and their metrics.

:class:`StreamRegistry` admits at most ``HEATPOSE_MAX_STREAMS`` streams (the route closes the
rest with 1013), and on drain (SIGTERM) closes each stream's frame slot, so each one answers
the frame it is working on and then closes with 1001. :meth:`StreamRegistry.drain_then` runs
a callback (uvicorn's own SIGTERM handler, which would close every WebSocket with 1012 at
once) only once the streams have closed: a stream's current frame gets at most
:data:`STREAM_FINISH_S` (or the grace period, if shorter); a stream still working then
abandons its frame and closes with 1001 too. So the streams add at most that to a shutdown,
never a whole grace period before uvicorn's own (:func:`shutdown_worst_case_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.streams.stream_session import FrameSlot

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("heatpose.app")

STREAM_FINISH_S = 2.0
"""On shutdown, the most a stream's current frame may take before the stream is closed (1001)
without its answer: a live frame is stale after that anyway, and uvicorn's grace period
(``HEATPOSE_SHUTDOWN_GRACE_S``) only starts once every stream is closed."""
_CLOSE_FRAMES_S = 1.0  # for the aborted streams to send their close frames


def shutdown_worst_case_s(settings: Settings) -> float:
    """The longest a SIGTERM can take to end the process, in seconds: the drain delay, the
    streams' last frames (:data:`STREAM_FINISH_S`, at most the grace period), uvicorn's grace
    period for in-flight requests, then the batchers' drain of queued crops (the same again).
    Kubernetes' ``terminationGracePeriodSeconds`` must be larger (deploy/kubernetes)."""
    grace = settings.shutdown_grace_s
    return settings.drain_delay_s + min(STREAM_FINISH_S, grace) + 2 * grace


_FRAME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StreamMetrics:
    """Stream metrics, in the app's registry (exposed at ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.open = Gauge("heatpose_streams_open", "Open WebSocket streams", registry=r)
        self.frames_in = Counter("heatpose_stream_frames_in", "Frames received", registry=r)
        self.frames_processed = Counter(
            "heatpose_stream_frames_processed", "Frames answered with persons", registry=r
        )
        self.frames_dropped = Counter(
            "heatpose_stream_frames_dropped",
            "Frames replaced by a newer one before processing (latest frame wins)",
            registry=r,
        )
        self.frame_errors = Counter(
            "heatpose_stream_frame_errors", "Frames answered with an error", ["code"], registry=r
        )
        self.latency = Histogram(
            "heatpose_stream_frame_latency_seconds",
            "Frame arrival to answer sent",
            buckets=_FRAME_BUCKETS,
            registry=r,
        )


class StreamRegistry:
    """Admission and drain of the streams of one app.

    Args:
        max_streams: most streams open at once.
        registry: the app's metrics registry.
    """

    def __init__(self, max_streams: int, registry: CollectorRegistry) -> None:
        self.max_streams = max_streams
        self.metrics = StreamMetrics(registry)
        self.slots: set[FrameSlot] = set()
        self.draining = False
        self._empty = asyncio.Event()
        self._empty.set()

    def open(self, slot: FrameSlot) -> bool:
        """Admit a stream; False when ``max_streams`` are open or the app drains."""
        if self.draining or len(self.slots) >= self.max_streams:
            return False
        self.slots.add(slot)
        self._empty.clear()
        self.metrics.open.set(len(self.slots))
        return True

    def close(self, slot: FrameSlot) -> None:
        """The stream ended (any reason)."""
        self.slots.discard(slot)
        self.metrics.open.set(len(self.slots))
        if not self.slots:
            self._empty.set()

    def drain(self) -> None:
        """Refuse new streams; each open one finishes its current frame, then closes 1001."""
        self.draining = True
        for slot in list(self.slots):
            slot.close("drain")

    async def wait_closed(self, timeout_s: float) -> bool:
        """Wait until no stream is open; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def drain_then(self, grace_s: float, then: Callable[[], None]) -> None:
        """:meth:`drain`, then call ``then`` once the streams closed: at most
        ``min(STREAM_FINISH_S, grace_s)`` later, when the streams still working are aborted
        (their frames abandoned, closed 1001), plus the moment their close frames take.

        Called from a signal handler on the event loop's thread; without a running loop or
        open streams ``then`` runs at once.
        """
        self.drain()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self.slots:
            then()
            return

        async def wait_then() -> None:
            start, budget = time.monotonic(), min(STREAM_FINISH_S, grace_s)
            if not await self.wait_closed(budget):
                log.warning(
                    "%d stream(s) still on a frame after %.1f s of drain: closing them (1001) "
                    "without its answer",
                    len(self.slots),
                    budget,
                )
                for slot in list(self.slots):
                    slot.abort("drain")
                await self.wait_closed(_CLOSE_FRAMES_S)
            log.info("streams closed after %.2f s of drain", time.monotonic() - start)
            then()

        task = loop.create_task(wait_then())
        self._drain_task = task  # keep a reference until it is done
