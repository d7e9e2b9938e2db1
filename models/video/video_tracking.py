"""Frame by frame through a video: where to look for persons, then tracks and smoothing.

The one per-frame logic of a live stream (``WS /v1/stream``) and of a video file
(``heatpose predict VIDEO``); both run each frame as:

1. :meth:`VideoTracker.plan`: a detector frame (:attr:`FramePlan.boxes` ``None``: the person
   detector, or the whole image without one) every ``det_interval`` frames and whenever no
   track can be followed; otherwise each track's box from its previous keypoints, enlarged 1.25x
   (:meth:`models.video.tracking.Tracker.next_boxes`, as rtmlib's and mmdeploy's pose trackers do),
   the best ``max_persons`` tracks; the person found in a followed box continues its track.
   Without a detector the whole image is looked at only when
   no track can be followed, and the person found there continues the track seen most recently
   (it is in the whole image by definition): without a detector a video has one track id, kept
   while the pose model loses and finds the person again, never a new id per frame.
2. The caller infers the frame's persons with :attr:`FramePlan.detect` as the detect mode and
   :attr:`FramePlan.boxes` as the client boxes (the service's batchers, or a
   :class:`~models.inference.pipeline.PosePipeline`).
3. :meth:`VideoTracker.update`: the :class:`~models.video.tracking.Tracker` gives each person a
track
   id, its One Euro filter smooths the keypoints (driven by the frame's timestamp), and each
   person carries its track's box score at its last detector frame (``None`` if never
   detected).

Boxes ``[x1, y1, x2, y2]`` and keypoints ``(x, y)`` are image px. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.inference.pipeline import DetectMode
from models.pose.persons import PersonResult
from models.video.smoothing import OneEuroParams
from models.video.tracking import Detection, Tracker

_ONE_EURO = OneEuroParams()  # the documented defaults


@dataclass(frozen=True)
class TrackingOptions:
    """How a video is followed.

    Attributes:
        det_interval: a detector frame every this many frames (1: every frame).
        max_persons: at most this many persons a frame.
        kpt_thr: keypoint score above which a keypoint counts for following and matching.
        smoothing: One Euro parameters, or ``None`` for raw keypoints.
    """

    det_interval: int = 5
    max_persons: int = 20
    kpt_thr: float = 0.3
    smoothing: OneEuroParams | None = _ONE_EURO


@dataclass(frozen=True)
class FramePlan:
    """Where to look for persons in one frame: ``boxes (N, 4)`` image px of the tracks followed
    (``track_ids`` in the same order), or ``None`` for a detector frame."""

    boxes: np.ndarray | None
    track_ids: tuple[int, ...]

    @property
    def detect(self) -> DetectMode:
        """The frame's detect mode: ``"auto"`` on a detector frame (the detector if there is
        one, else the whole image), ``"false"`` for followed boxes (given, as a client's)."""
        return "auto" if self.boxes is None else "false"


@dataclass
class FramePerson:
    """One tracked person in one frame: its ``track_id`` and the pose result, whose
    ``keypoints (K, 2)`` image px are the smoothed ones and whose ``box_score`` is the track's
    box score at its last detector frame (``None`` if never detected)."""

    track_id: int
    person: PersonResult


class VideoTracker:
    """The per-frame state of one video or stream: :meth:`plan`, infer, :meth:`update`.

    Args:
        options: see :class:`TrackingOptions`.
        has_detector: whether the caller's inference has a person detector.
    """

    def __init__(self, options: TrackingOptions, *, has_detector: bool) -> None:
        self.options, self.has_detector = options, has_detector
        self.tracker = Tracker(kpt_thr=options.kpt_thr, smoothing=options.smoothing)
        self.frames = 0  # frames updated so far
        self.det_scores: dict[int, float | None] = {}  # each track's last detector box score

    def plan(self, width: int, height: int) -> FramePlan:
        """Where to look in the next frame, ``width`` x ``height`` px (module docstring, 1.)."""
        following = []
        if not self.has_detector or self.frames % self.options.det_interval != 0:
            following = self.tracker.next_boxes(image_size=(width, height))
        if not following:
            return FramePlan(None, ())
        scores = {t.track_id: t.score for t in self.tracker.tracks}
        following.sort(key=lambda tb: -scores.get(tb[0], 0.0))
        following = following[: self.options.max_persons]
        return FramePlan(np.stack([b for _, b in following]), tuple(i for i, _ in following))

    def _continued(self, plan: FramePlan, results: list[PersonResult]) -> dict[int, int]:
        """Detection index -> the track it continues, whatever the similarity: a box followed
        from a track's keypoints holds that track's person; without a detector, the
        whole-image person of a frame where no track could be followed continues the track
        seen most recently (module docstring)."""
        if plan.boxes is not None:
            return dict(enumerate(plan.track_ids[: len(results)]))
        whole = not self.has_detector and len(results) == 1
        if not whole or not self.tracker.tracks:
            return {}
        last = min(self.tracker.tracks, key=lambda t: (t.missing, -t.hits))
        return {0: last.track_id}

    def update(
        self, plan: FramePlan, results: list[PersonResult], *, timestamp_s: float
    ) -> list[FramePerson]:
        """The frame's persons (inferred as ``plan`` says), tracked and smoothed, in order.

        ``timestamp_s``: the frame's time in seconds (increasing within the video).
        """
        self.frames += 1
        results = results[: self.options.max_persons]
        dets = [
            Detection(
                box=r.box,
                score=float(np.mean(r.scores)) if r.box_score is None else r.box_score,
                keypoints=r.keypoints,
                keypoint_scores=r.scores,
            )
            for r in results
        ]
        tracked = self.tracker.update(dets, timestamp_s, assign=self._continued(plan, results))
        if plan.boxes is None:  # a detector frame: the box's own score (None: whole image)
            for t, r in zip(tracked, results, strict=True):
                self.det_scores[t.track_id] = r.box_score
        live = {t.track_id for t in self.tracker.tracks}
        self.det_scores = {k: v for k, v in self.det_scores.items() if k in live}
        return [
            FramePerson(
                t.track_id,
                replace(
                    r,
                    keypoints=r.keypoints if t.keypoints is None else t.keypoints,
                    box_score=self.det_scores.get(t.track_id),
                ),
            )
            for t, r in zip(tracked, results, strict=True)
        ]
