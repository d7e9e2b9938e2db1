"""One ``WS /v1/stream`` connection's parameters, its frame slot, and the answer message.

- :class:`StreamParams`: the opening query parameters, validated (:func:`parse_stream_params`).
- :class:`FrameSlot`: latest frame wins. One frame waits at most; a newer one replaces it and
  counts as dropped, so a client sending faster than the model never makes the server buffer.
- :func:`frame_message`: one frame's tracked persons as the answer message; ``heatpose predict
  VIDEO`` writes the same messages (its JSON lines).

Which frames run the detector, tracking and smoothing are :class:`models.video.video_tracking.
VideoTracker`'s, shared with the video files of ``heatpose predict``. The route
(:mod:`app.http.routes.stream`) owns the socket; nothing here does I/O. Boxes and keypoints are
image px, ``(x, y)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.inference.pipeline import keypoint_visible
from models.video.smoothing import OneEuroParams
from models.video.video_tracking import FramePerson, TrackingOptions

_EURO = OneEuroParams()


class StreamParams(BaseModel):
    """The opening query parameters of a stream (unknown ones are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    det_interval: int = Field(5, ge=1, le=10_000)
    smoothing: Literal["none", "one_euro"] = "one_euro"
    min_cutoff: float = Field(_EURO.min_cutoff, gt=0, le=1000)
    beta: float = Field(_EURO.beta, ge=0, le=1000)
    d_cutoff: float = Field(_EURO.d_cutoff, gt=0, le=1000)
    max_persons: int = Field(20, ge=1, le=100)
    kpt_thr: float = Field(0.3, ge=0, le=1)
    flip_test: bool | None = None

    @property
    def one_euro(self) -> OneEuroParams | None:
        """The filter's parameters, or None with ``smoothing=none``."""
        if self.smoothing == "none":
            return None
        return OneEuroParams(self.min_cutoff, self.beta, self.d_cutoff)

    @property
    def tracking(self) -> TrackingOptions:
        """The per-frame logic's options (:class:`models.video.video_tracking.VideoTracker`)."""
        return TrackingOptions(
            det_interval=self.det_interval,
            max_persons=self.max_persons,
            kpt_thr=self.kpt_thr,
            smoothing=self.one_euro,
        )


class StreamParamError(ValueError):
    """Invalid opening parameters; the message names each one."""


def parse_stream_params(query: Mapping[str, str], *, ignore: tuple[str, ...] = ()) -> StreamParams:
    """The query string -> :class:`StreamParams` (``ignore``: keys read elsewhere, the API key).

    Raises:
        StreamParamError: ``"det_interval: Input should be greater than or equal to 1; ..."``.
    """
    try:
        return StreamParams.model_validate({k: v for k, v in query.items() if k not in ignore})
    except ValidationError as e:
        parts = [f"{'.'.join(map(str, x['loc'])) or '?'}: {x['msg']}" for x in e.errors()]
        raise StreamParamError("; ".join(parts)) from None


@dataclass(frozen=True)
class Frame:
    """One received frame: encoded bytes, ``seq``, ``ts_ms``, ``time.monotonic()`` arrival."""

    data: bytes
    seq: int
    ts_ms: float
    arrival: float


CloseReason = Literal["disconnect", "idle", "drain"]


class FrameSlot:
    """Latest frame wins: a queue of depth one between the receiving and the working task."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self.dropped = 0  # frames replaced since the last :meth:`take`
        self.closed: CloseReason | None = None
        self.aborted = asyncio.Event()  # set by :meth:`abort`: stop even the current frame

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True when it replaced a waiting one (that one is dropped)."""
        replaced = self._frame is not None
        self.dropped += replaced
        self._frame = frame
        self._ready.set()
        return replaced

    def close(self, reason: CloseReason) -> None:
        """No more frames; a waiting :meth:`take` returns None. The first reason stays."""
        self.closed = self.closed or reason
        self._ready.set()

    def abort(self, reason: CloseReason) -> None:
        """:meth:`close`, and the frame being worked on is abandoned too (a shutdown that
        cannot wait for it)."""
        self.close(reason)
        self.aborted.set()

    async def take(self) -> tuple[Frame, int] | None:
        """The newest frame and how many were dropped before it; None once closed."""
        while True:
            if self.closed is not None:
                return None
            if self._frame is not None:
                frame, dropped = self._frame, self.dropped
                self._frame, self.dropped = None, 0
                self._ready.clear()
                return frame, dropped
            self._ready.clear()
            await self._ready.wait()


def frame_message(
    seq: int,
    ts_ms: float,
    size: tuple[int, int],
    persons: Sequence[FramePerson],
    *,
    names: Sequence[str],
    kpt_thr: float,
) -> dict[str, Any]:
    """One frame's answer: ``{seq, ts_ms, width, height, persons: [{track_id, bbox,
    bbox_score, score, keypoints: [{name, x, y, score, visible}]}]}`` (image px, keypoint
    fields as in ``/predict``; ``size`` is ``(w, h)``). A stream adds ``latency_ms`` and
    ``dropped``; a video file's JSON lines are these messages as they are."""
    return {
        "seq": seq,
        "ts_ms": ts_ms,
        "width": size[0],
        "height": size[1],
        "persons": [
            person_message(p, names=names, kpt_thr=kpt_thr, image_size=size) for p in persons
        ],
    }


def person_message(
    p: FramePerson, *, names: Sequence[str], kpt_thr: float, image_size: tuple[int, int]
) -> dict[str, Any]:
    """One tracked person of :func:`frame_message` (``visible``: score at least ``kpt_thr`` and
    inside the ``image_size`` ``(w, h)`` frame)."""
    r = p.person
    visible = keypoint_visible(
        r.scores, kpt_thr, keypoints=r.keypoints, image_size=image_size
    ).tolist()
    points = zip(names, r.keypoints.tolist(), r.scores.tolist(), visible, strict=True)
    keypoints = [
        {"name": n, "x": float(x), "y": float(y), "score": float(s), "visible": v}
        for n, (x, y), s, v in points
    ]
    return {
        "track_id": p.track_id,
        "bbox": [float(v) for v in r.box],
        "bbox_score": None if r.box_score is None else float(r.box_score),
        "score": float(np.mean(r.scores)) if len(r.scores) else 0.0,
        "keypoints": keypoints,
    }
