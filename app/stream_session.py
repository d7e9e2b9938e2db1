"""One ``WS /v1/stream`` connection's state: its parameters, the frame slot, tracks and smoothing.

- :class:`StreamParams`: the opening query parameters, validated (:func:`parse_stream_params`).
- :class:`FrameSlot`: latest frame wins. One frame waits at most; a newer one replaces it and
  counts as dropped, so a client sending faster than the model never makes the server buffer.
- :class:`StreamSession`: per processed frame, which person boxes to ask the pose model for
  (every ``det_interval`` frames the whole image, in between each track's box from its last
  keypoints, enlarged 1.25x: :meth:`models.tracking.Tracker.next_boxes`), then the tracker and
  its One Euro filters, and the answer message. Boxes and keypoints are image px, ``(x, y)``.

The route (:mod:`app.routes.stream`) owns the socket; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.persons import PersonResult
from models.pipeline import keypoint_visible
from models.smoothing import OneEuroParams
from models.tracking import Detection, Tracker

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


@dataclass(frozen=True)
class FramePlan:
    """Where to look for persons in one frame: ``boxes (N, 4)`` image px of the tracks followed
    (``track_ids`` in the same order), or ``None`` for a detector frame (the person detector,
    or the whole image when the service has none)."""

    boxes: np.ndarray | None
    track_ids: tuple[int, ...]


class StreamSession:
    """Tracks and smoothing of one stream; :meth:`plan` then :meth:`answer` per frame."""

    def __init__(
        self, params: StreamParams, names: tuple[str, ...], *, has_detector: bool = False
    ) -> None:
        self.params, self.names, self.has_detector = params, names, has_detector
        self.tracker = Tracker(kpt_thr=params.kpt_thr, smoothing=params.one_euro)
        self.frames = 0  # processed frames
        self.det_scores: dict[int, float | None] = {}  # each track's last detector box score

    def plan(self, width: int, height: int) -> FramePlan:
        """Detector frame every ``det_interval`` frames (with a detector) and whenever no track
        can be followed; otherwise the tracks' boxes from their last keypoints (best
        ``max_persons``). Without a detector the whole image is looked at only when no track
        can be followed."""
        following = []
        if not self.has_detector or self.frames % self.params.det_interval != 0:
            following = self.tracker.next_boxes(image_size=(width, height))
        if not following:
            return FramePlan(None, ())
        scores = {t.track_id: t.score for t in self.tracker.tracks}
        following.sort(key=lambda tb: -scores.get(tb[0], 0.0))
        following = following[: self.params.max_persons]
        return FramePlan(np.stack([b for _, b in following]), tuple(i for i, _ in following))

    def answer(
        self, plan: FramePlan, results: list[PersonResult], *, timestamp_s: float
    ) -> list[dict[str, Any]]:
        """Track the frame's persons, smooth their keypoints; the ``persons`` of the message."""
        self.frames += 1
        results = results[: self.params.max_persons]
        dets = [
            Detection(
                box=r.box,
                score=float(np.mean(r.scores)) if r.box_score is None else r.box_score,
                keypoints=r.keypoints,
                keypoint_scores=r.scores,
            )
            for r in results
        ]
        tracked = self.tracker.update(dets, timestamp_s)
        out = []
        for r, t in zip(results, tracked, strict=True):
            if plan.boxes is None:  # a detector frame: the box's own score (None: whole image)
                self.det_scores[t.track_id] = r.box_score
            kps = r.keypoints if t.keypoints is None else t.keypoints
            out.append(self._person(t.track_id, r, kps, self.det_scores.get(t.track_id)))
        live = {t.track_id for t in self.tracker.tracks}
        self.det_scores = {k: v for k, v in self.det_scores.items() if k in live}
        return out

    def _person(
        self, track_id: int, r: PersonResult, kps: np.ndarray, bbox_score: float | None
    ) -> dict[str, Any]:
        visible = keypoint_visible(r.scores, self.params.kpt_thr).tolist()
        keypoints = [
            {"name": n, "x": float(x), "y": float(y), "score": float(s), "visible": v}
            for n, (x, y), s, v in zip(
                self.names, kps.tolist(), r.scores.tolist(), visible, strict=True
            )
        ]
        return {
            "track_id": track_id,
            "bbox": [float(v) for v in r.box],
            "bbox_score": bbox_score,
            "score": float(np.mean(r.scores)) if len(r.scores) else 0.0,
            "keypoints": keypoints,
        }
