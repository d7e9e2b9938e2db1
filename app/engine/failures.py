"""The serving engine's failures: why a request got no inference.

The batch queues (:mod:`app.engine.batch_queue`) and the service raise them; ``app.http.errors``
alone turns them into HTTP answers (503 with ``Retry-After``, 413, 504, 500), the streams into
error messages.
"""

from __future__ import annotations

from typing import Literal

NotServingState = Literal["not_ready", "shutting_down", "failed"]


class QueueFull(Exception):
    """Too many person crops are queued; the caller should retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OverCapacity(Exception):
    """One request has more person crops than the queue can ever hold (retrying cannot help)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its persons were inferred."""


class NotServing(Exception):
    """No inference now: the model is loading (``not_ready``), the service is draining
    (``shutting_down``) or the batcher died (``failed``); ``reason`` says which in words."""

    def __init__(self, reason: str, *, state: NotServingState = "not_ready") -> None:
        super().__init__(reason)
        self.reason = reason
        self.state = state


class BatchFailed(Exception):
    """The forward pass or decode of the batch holding this request raised (``__cause__``)."""
