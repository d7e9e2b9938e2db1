"""Failure isolation for batches shared by many requests: retry a failed batch in halves.

A batch holds the items of many requests (person crops for the pose stage, whole images for the
detector stage). When its forward pass raises, the cause may be one input (an image the model
cannot resize, a crop that trips a kernel) or the device. :func:`run_isolated` retries the
batch in halves, recursively, until each failing part is a single item: only those items get
the error, every other item gets its output. It is the one place that does so; both batchers
call it (:meth:`app.engine.batch_queue.BatchQueue._process`).

Cost: each level of halving runs at most the items of the level above, so a batch of ``n``
where everything fails (a broken device) costs about ``log2(n) + 1`` times one batch; one bad
input among ``n`` costs ``2 * log2(n)`` extra forward calls of shrinking size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger("heatpose.batcher")

Item = TypeVar("Item")
Out = TypeVar("Out")


def run_isolated(
    run: Callable[[list[Item]], Sequence[Out]], batch: Sequence[Item]
) -> list[Out | Exception]:
    """``run(batch)``, one output per item; where it raises, the halves are run instead.

    Args:
        run: the stage's batched call (on the worker thread): ``len(part)`` outputs for
            ``part``, or an exception.
        batch: the items, in order.

    Returns:
        Per item, in order, its output, or the exception that a run of that item alone
        raised (an ``Exception``; a ``BaseException`` such as ``KeyboardInterrupt`` is
        not caught).
    """
    items = list(batch)
    if not items:
        return []
    try:
        outputs = list(run(items))
    except Exception as e:
        if len(items) == 1:
            return [e]
        half = len(items) // 2
        log.warning(
            "a batch of %d failed (%s: %s); retrying as %d + %d to isolate the failing inputs",
            len(items),
            type(e).__name__,
            e,
            half,
            len(items) - half,
        )
        return run_isolated(run, items[:half]) + run_isolated(run, items[half:])
    if len(outputs) != len(items):
        return [RuntimeError(f"{len(outputs)} outputs for {len(items)} inputs")] * len(items)
    return list(outputs)
