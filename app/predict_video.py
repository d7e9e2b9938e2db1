"""``heatpose predict`` on a video: tracked, smoothed persons as JSON lines, an annotated MP4.

Frames are read with OpenCV and go through the pipeline one at a time, as a stream's frames
do: the detector runs every ``--det-interval`` frames (and whenever no track can be followed);
in between each track is cropped from the box its previous keypoints span, enlarged 1.25x
(:meth:`models.tracking.Tracker.next_boxes`).
A :class:`~models.tracking.Tracker` gives every person a track id and, with ``--smoothing
one_euro``, filters its keypoints causally by the frames' timestamps (``seq / fps``). With
``--smoothing savgol`` the tracks are kept raw and each track's contiguous runs of frames are
smoothed afterwards by the non-causal Savitzky-Golay filter of :mod:`models.smoothing`.

``NAME.jsonl`` has one line per frame in the stream's message schema: ``seq``, ``ts_ms``,
``width``, ``height``, ``persons: [{track_id, bbox, bbox_score, score, keypoints: [{name, x,
y, score, visible}]}]`` (image px; ``bbox_score``: the track's box score at its last detection,
null without a detector).
``NAME.overlay.mp4`` (``--overlay``) draws each track's box, ``#id`` and skeleton in its colour.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from app.overlay import PALETTE, draw_box, draw_skeleton
from app.predict_args import UsageError
from app.predict_images import pipeline_options
from models.keypoints import KeypointSpec
from models.persons import PersonBoxes, PersonResult
from models.pipeline import PosePipeline, keypoint_visible
from models.smoothing import OneEuroParams, savgol
from models.tracking import Detection, Tracker
from models.video_files import write_video


@dataclass
class FramePerson:
    """One tracked person in one frame: its ``track_id`` and the pipeline's ``person`` (box,
    ``box_score`` None unless detected in this frame), its keypoints ``(K, 2)`` image px
    replaced by the smoothed ones."""

    track_id: int
    person: PersonResult


@dataclass(frozen=True)
class VideoInfo:
    """What OpenCV says of a video: ``fps``, ``frames`` (0 when unknown), ``size`` (w, h)."""

    fps: float
    frames: int
    size: tuple[int, int]


def probe(path: Path) -> VideoInfo:
    """Open ``path`` and read its first frame.

    Raises:
        UsageError: OpenCV cannot open it or read a frame from it.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok or frame is None:
            raise UsageError(f"{path}: OpenCV cannot read a video frame from this file")
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = frame.shape[:2]
        return VideoInfo(fps if fps > 0 else 30.0, max(count, 0), (w, h))
    finally:
        cap.release()


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of ``path`` as ``(H, W, 3)`` uint8 RGB, in order."""
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def track_frames(
    pipeline: PosePipeline,
    frames: Iterator[np.ndarray],
    info: VideoInfo,
    args: argparse.Namespace,
    *,
    progress: tqdm | None = None,
) -> list[list[FramePerson]]:
    """Every frame's tracked persons (see the module docstring)."""
    one_euro = OneEuroParams(args.min_cutoff, args.beta, args.d_cutoff)
    smoothing = one_euro if args.smoothing == "one_euro" else None
    tracker = Tracker(kpt_thr=args.kpt_thr, smoothing=smoothing)
    options = pipeline_options(args)
    out: list[list[FramePerson]] = []
    det_scores: dict[int, float | None] = {}  # each track's box score at its last detection
    for seq, frame in enumerate(frames):
        follow = [] if seq % args.det_interval == 0 else tracker.next_boxes(info.size)
        detecting = not follow  # also when no track can be followed, as the stream does
        boxes = None if detecting else PersonBoxes(np.stack([b for _, b in follow]), None, "client")
        people = pipeline([frame], [boxes], options)[0]
        detections = [
            Detection(
                r.box,
                float(np.mean(r.scores)) if r.box_score is None else r.box_score,
                r.keypoints,
                r.scores,
            )
            for r in people
        ]
        tracked = tracker.update(detections, seq / info.fps)
        if detecting:
            det_scores |= {t.track_id: r.box_score for t, r in zip(tracked, people, strict=True)}
        live = {t.track_id for t in tracker.tracks}
        det_scores = {k: v for k, v in det_scores.items() if k in live}
        out.append(
            [
                FramePerson(
                    t.track_id,
                    replace(
                        r,
                        keypoints=np.asarray(t.keypoints),
                        box_score=det_scores.get(t.track_id),
                    ),
                )
                for t, r in zip(tracked, people, strict=True)
            ]
        )
        if progress is not None:
            progress.update(1)
    return out


def smooth_savgol(frames: list[list[FramePerson]], window: int, order: int) -> None:
    """Savitzky-Golay along each track's runs of consecutive frames, in place."""
    runs: dict[int, list[tuple[int, FramePerson]]] = defaultdict(list)
    for seq, persons in enumerate(frames):
        for p in persons:
            runs[p.track_id].append((seq, p))
    for track in runs.values():
        start = 0
        for i in range(1, len(track) + 1):
            if i == len(track) or track[i][0] != track[i - 1][0] + 1:
                run = [p for _, p in track[start:i]]
                smoothed = savgol(np.stack([p.person.keypoints for p in run]), window, order)
                for p, k in zip(run, smoothed, strict=True):
                    p.person = replace(p.person, keypoints=k)
                start = i


def frame_message(
    seq: int,
    fps: float,
    size: tuple[int, int],
    persons: Sequence[FramePerson],
    *,
    names: Sequence[str],
    kpt_thr: float,
) -> dict[str, Any]:
    """One frame in the stream's message schema (image px)."""
    out = []
    for tracked in persons:
        p = tracked.person
        visible = keypoint_visible(p.scores, kpt_thr)
        out.append(
            {
                "track_id": tracked.track_id,
                "bbox": [round(float(v), 2) for v in p.box],
                "bbox_score": None if p.box_score is None else round(float(p.box_score), 4),
                "score": round(float(np.mean(p.scores)), 4) if len(p.scores) else 0.0,
                "keypoints": [
                    {
                        "name": n,
                        "x": round(float(x), 2),
                        "y": round(float(y), 2),
                        "score": round(float(s), 4),
                        "visible": bool(v),
                    }
                    for n, (x, y), s, v in zip(names, p.keypoints, p.scores, visible, strict=True)
                ],
            }
        )
    return {
        "seq": seq,
        "ts_ms": round(seq * 1000.0 / fps, 3),
        "width": size[0],
        "height": size[1],
        "persons": out,
    }


def draw_tracks(
    frame: np.ndarray, persons: Sequence[FramePerson], spec: KeypointSpec, kpt_thr: float
) -> np.ndarray:
    """``frame (H, W, 3)`` uint8 RGB with each track's box, ``#id`` (and detector score) and
    skeleton in its colour (:data:`app.overlay.PALETTE` by track id)."""
    out = frame.copy()
    for p in persons:
        colour = PALETTE[p.track_id % len(PALETTE)]
        draw_box(out, p.person, p.track_id, colour)
        draw_skeleton(out, p.person.keypoints, p.person.scores, spec, kpt_thr, colour)
    return out


def run_video(pipeline: PosePipeline, path: Path, args: argparse.Namespace) -> None:
    """Track the persons of the video ``path``; write ``NAME.jsonl`` (and the overlay MP4)."""
    info = probe(path)
    spec = pipeline.predictor.spec
    total = info.frames or None
    with tqdm(total=total, unit="frame", desc=path.name, file=sys.stderr) as bar:
        frames = track_frames(pipeline, read_frames(path), info, args, progress=bar)
    if args.smoothing == "savgol":
        smooth_savgol(frames, args.savgol_window, args.savgol_order)
    lines = (
        frame_message(seq, info.fps, info.size, persons, names=spec.names, kpt_thr=args.kpt_thr)
        for seq, persons in enumerate(frames)
    )
    out: Path = args.out
    (out / f"{path.stem}.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    if args.overlay:
        drawn = (
            draw_tracks(frame, persons, spec, args.kpt_thr)
            for frame, persons in zip(read_frames(path), frames, strict=False)
        )
        with tqdm(total=len(frames), unit="frame", desc="overlay", file=sys.stderr) as bar:
            write_video(out / f"{path.stem}.overlay.mp4", _counted(drawn, bar), info.fps)


def _counted(items: Iterator[np.ndarray], bar: tqdm) -> Iterator[np.ndarray]:
    for item in items:
        yield item
        bar.update(1)
