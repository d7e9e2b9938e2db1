"""Waiting for a serving stage (a :class:`app.engine.batch_queue.BatchQueue`) to come idle."""

from __future__ import annotations

import asyncio
import time

from app.engine.batch_queue import BatchQueue


async def until_idle(stage: BatchQueue, *, timeout_s: float = 30.0) -> None:
    """Return once ``stage`` has nothing queued and no batch running; fail after ``timeout_s``.

    A batch a test held and let go finishes on its worker thread a moment later (longer on a
    busy machine). Until then its time so far counts as the stage's pace, so a request with a
    short deadline would rightly be refused (503).
    """
    end = time.monotonic() + timeout_s
    while (stage.queued or stage.in_flight) and time.monotonic() < end:
        await asyncio.sleep(0.01)
    assert not stage.queued and not stage.in_flight, "the stage did not come idle"
