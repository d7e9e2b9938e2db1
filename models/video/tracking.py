"""Frame-to-frame person tracks for one video stream, with One Euro smoothing per track.

A :class:`Tracker` (one per stream) takes each frame's person results (:class:`Detection`:
box, score and, where the pose model ran, keypoints) and gives every one a track id:

- Each live track predicts where it is now: its last box and keypoints shifted by its velocity
  (constant-velocity motion, from the box centres of its last matches) times the time since.
- Similarity of a track and a detection: the box IoU; where both have at least one keypoint
  above ``kpt_thr``, the mean of IoU and OKS (COCO's per-keypoint sigmas, over keypoints
  confident in both). Matching is greedy: the most similar pair first, the detection's score
  breaking ties, pairs under ``min_similarity`` never.
- A detection without a track starts a new one with the next id: ids are never reused within a
  stream. A track unseen for more than ``max_missing`` consecutive frames is dropped.
- A matched track's keypoints go through its own One Euro filter (timestamps in seconds), so a
  dropped frame is a longer step for the filter, not a jump.

Between detector frames a stream crops each person from the box its previous keypoints span,
enlarged 1.25x (as rtmlib's and mmdeploy's pose trackers do): :func:`keypoints_to_box` and
:meth:`Tracker.next_boxes`. Boxes are ``[x1, y1, x2, y2]``, points ``(x, y)``, image pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.pose.keypoints import COCO_KEYPOINTS
from models.pose.persons import MIN_BOX_SIZE
from models.video.similarity import box_iou, oks_matrix
from models.video.smoothing import OneEuroFilter, OneEuroParams


def keypoints_to_box(
    keypoints: np.ndarray,
    scores: np.ndarray,
    *,
    kpt_thr: float = 0.3,
    enlarge: float = 1.25,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """The box the confident keypoints span, enlarged about its centre.

    Args:
        keypoints: ``(K, 2)`` image px.
        scores: ``(K,)``; only keypoints with ``score > kpt_thr`` count.
        enlarge: factor on the width and the height (1.25 as rtmlib / mmdeploy).
        image_size: ``(w, h)``: clip the box to the image.

    Returns:
        ``(4,)`` xyxy image px, or None when fewer than two keypoints are confident or the
        box is empty (e.g. outside the image) or under :data:`models.pose.persons.MIN_BOX_SIZE`.
    """
    pts = np.asarray(keypoints, dtype=np.float64)[np.asarray(scores) > kpt_thr]
    if len(pts) < 2:
        return None
    lo, hi = pts.min(0), pts.max(0)
    center, half = (lo + hi) / 2.0, (hi - lo) / 2.0 * enlarge
    box = np.concatenate([center - half, center + half])
    if image_size is not None:
        box = np.clip(box, 0.0, np.tile(np.asarray(image_size, dtype=np.float64), 2))
    if box[2] - box[0] < MIN_BOX_SIZE or box[3] - box[1] < MIN_BOX_SIZE:  # empty, or too small
        return None
    return box


@dataclass
class Detection:
    """One person in one frame: ``box (4,)`` xyxy image px and its ``score``; ``keypoints
    (K, 2)`` image px and ``keypoint_scores (K,)`` where the pose model ran."""

    box: np.ndarray
    score: float = 1.0
    keypoints: np.ndarray | None = None
    keypoint_scores: np.ndarray | None = None


@dataclass
class Track:
    """A person followed across frames. ``box``, ``keypoints`` (raw, image px) and scores are
    those of its last match at ``timestamp`` (s); ``velocity (2,)`` px/s of the box centre;
    ``missing``: consecutive frames unseen since; ``smoothed (K, 2)``: the filter's output."""

    track_id: int
    box: np.ndarray
    score: float
    keypoints: np.ndarray | None
    keypoint_scores: np.ndarray | None
    timestamp: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    missing: int = 0
    hits: int = 1
    smoothed: np.ndarray | None = None
    smoother: OneEuroFilter | None = None


@dataclass
class TrackedPerson:
    """The answer for one detection: its ``track_id``, the detection's box and score, and its
    keypoints ``(K, 2)`` image px after smoothing (raw when smoothing is off)."""

    track_id: int
    box: np.ndarray
    score: float
    keypoints: np.ndarray | None
    keypoint_scores: np.ndarray | None


class Tracker:
    """Tracks of one stream (make one Tracker per stream; ids are unique within it).

    Args:
        min_similarity: least similarity (IoU, or mean of IoU and OKS) for a match.
        max_missing: frames a track may go unseen and still be matched.
        kpt_thr: keypoint score above which a keypoint counts (OKS, boxes from keypoints).
        sigmas: K OKS constants (default COCO's).
        smoothing: One Euro parameters, or None for raw keypoints.
        use_motion: predict each track forward by its velocity before matching.
    """

    def __init__(
        self,
        *,
        min_similarity: float = 0.3,
        max_missing: int = 10,
        kpt_thr: float = 0.3,
        sigmas: Sequence[float] = COCO_KEYPOINTS.sigmas,
        smoothing: OneEuroParams | None = OneEuroParams(),
        use_motion: bool = True,
    ) -> None:
        if max_missing < 0:
            raise ValueError(f"max_missing must be >= 0, got {max_missing}")
        self.min_similarity, self.max_missing, self.kpt_thr = min_similarity, max_missing, kpt_thr
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self.smoothing, self.use_motion = smoothing, use_motion
        self.tracks: list[Track] = []
        self._next_id = 1

    def _predicted(self, timestamp: float) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Each track's box ``(T, 4)`` and keypoints moved to ``timestamp`` by its velocity."""
        boxes, kpts = [], []
        for t in self.tracks:
            shift = t.velocity * (timestamp - t.timestamp) if self.use_motion else np.zeros(2)
            boxes.append(t.box + np.tile(shift, 2))
            kpts.append(None if t.keypoints is None else t.keypoints + shift)
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), kpts

    def _confident(self, scores: np.ndarray | None, k: int) -> np.ndarray:
        return np.zeros(k, bool) if scores is None else np.asarray(scores) > self.kpt_thr

    def similarity(self, detections: Sequence[Detection], timestamp: float) -> np.ndarray:
        """``(T, D)`` similarity of the live tracks (predicted to ``timestamp``) and detections."""
        boxes, kpts = self._predicted(timestamp)
        det_boxes = np.asarray([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        sim = box_iou(boxes, det_boxes)
        posed = [(i, k) for i, k in enumerate(kpts) if k is not None]
        ti = [i for i, _ in posed]
        dj = [j for j, d in enumerate(detections) if d.keypoints is not None]
        if not ti or not dj:
            return sim
        k = len(self.sigmas)

        def area(b: np.ndarray) -> np.ndarray:
            return np.clip(b[:, 2:] - b[:, :2], 1.0, None).prod(-1)

        oks = oks_matrix(
            np.stack([k for _, k in posed]),
            area(boxes[ti]),
            np.stack([np.asarray(detections[j].keypoints, np.float64) for j in dj]),
            area(det_boxes[dj]),
            self.sigmas,
            valid_a=np.stack([self._confident(self.tracks[i].keypoint_scores, k) for i in ti]),
            valid_b=np.stack([self._confident(detections[j].keypoint_scores, k) for j in dj]),
        )
        iou = sim[np.ix_(ti, dj)]
        sim[np.ix_(ti, dj)] = np.where(np.isnan(oks), iou, (iou + oks) / 2.0)
        return sim

    def update(
        self,
        detections: Sequence[Detection],
        timestamp: float,
        *,
        assign: Mapping[int, int] | None = None,
    ) -> list[TrackedPerson]:
        """Assign the frame's detections to tracks; returns one result per detection, in order.

        ``timestamp``: the frame's time in seconds (increasing within the stream).
        ``assign``: detection index -> the id of a live track it continues whatever the
        similarity (e.g. the whole-image person without a detector); the rest are matched.
        """
        sim = self.similarity(detections, timestamp)
        track_of: dict[int, Track] = {}
        used: set[int] = set()
        ids = {t.track_id: i for i, t in enumerate(self.tracks)}
        for j, track_id in (assign or {}).items():
            if track_id in ids and ids[track_id] not in used:
                used.add(ids[track_id])
                track_of[j] = self.tracks[ids[track_id]]
        pairs = [
            (-sim[i, j], -float(detections[j].score), i, j)
            for i in range(sim.shape[0])
            for j in range(sim.shape[1])
            if sim[i, j] >= self.min_similarity
        ]
        for _, _, i, j in sorted(pairs):
            if i not in used and j not in track_of:
                used.add(i)
                track_of[j] = self.tracks[i]
        for i, t in enumerate(self.tracks):
            if i not in used:
                t.missing += 1
        self.tracks = [t for t in self.tracks if t.missing <= self.max_missing]
        out = []
        for j, d in enumerate(detections):
            t = track_of.get(j) or self._start(d, timestamp)
            if j in track_of:
                self._follow(t, d, timestamp)
            out.append(TrackedPerson(t.track_id, t.box, t.score, t.smoothed, t.keypoint_scores))
        return out

    def _start(self, d: Detection, timestamp: float) -> Track:
        box = np.asarray(d.box, np.float64)
        t = Track(self._next_id, box, float(d.score), None, None, timestamp)
        self._next_id += 1
        if self.smoothing is not None:
            t.smoother = OneEuroFilter(self.smoothing)
        self._set_pose(t, d, timestamp)
        self.tracks.append(t)
        return t

    def _follow(self, t: Track, d: Detection, timestamp: float) -> None:
        box = np.asarray(d.box, np.float64)
        dt = timestamp - t.timestamp
        if dt > 0:
            v = ((box[:2] + box[2:]) - (t.box[:2] + t.box[2:])) / 2.0 / dt
            t.velocity = v if t.hits == 1 else 0.5 * (t.velocity + v)
        t.box, t.score, t.timestamp = box, float(d.score), timestamp
        t.missing, t.hits = 0, t.hits + 1
        self._set_pose(t, d, timestamp)

    def _set_pose(self, t: Track, d: Detection, timestamp: float) -> None:
        if d.keypoints is None:
            t.keypoints = t.keypoint_scores = t.smoothed = None
            return
        t.keypoints = np.asarray(d.keypoints, np.float64)
        k = len(t.keypoints)
        t.keypoint_scores = (
            np.ones(k) if d.keypoint_scores is None else np.asarray(d.keypoint_scores, np.float64)
        )
        smoother = t.smoother
        t.smoothed = t.keypoints.copy() if smoother is None else smoother(t.keypoints, timestamp)

    def next_boxes(self, image_size: tuple[int, int] | None = None) -> list[tuple[int, np.ndarray]]:
        """``(track_id, box (4,) xyxy image px)`` for the next frame of each track seen in the
        last one, from its raw keypoints (:func:`keypoints_to_box`, 1.25x); tracks without
        enough confident keypoints are left out (the detector must find them again)."""
        out = []
        for t in self.tracks:
            if t.missing == 0 and t.keypoints is not None and t.keypoint_scores is not None:
                box = keypoints_to_box(
                    t.keypoints, t.keypoint_scores, kpt_thr=self.kpt_thr, image_size=image_size
                )
                if box is not None:
                    out.append((t.track_id, box))
        return out
