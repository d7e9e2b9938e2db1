"""``heatpose predict`` on a video: tracked, smoothed persons as JSON lines, an annotated MP4.

Frames are read with OpenCV and go through the pipeline one at a time with the per-frame logic
of a ``WS /v1/stream`` stream (:class:`models.video.video_tracking.VideoTracker`): the detector runs
every ``--det-interval`` frames (and whenever no track can be followed); in between each track
is cropped from the box its previous keypoints span, enlarged 1.25x. Every person gets a track
id and, with ``--smoothing one_euro``, its keypoints are filtered causally by the frames'
timestamps (``ts_ms = seq * 1000 / fps``). With ``--smoothing savgol`` the tracks are kept raw
and each track's contiguous runs of frames are smoothed afterwards by the non-causal
Savitzky-Golay filter of :mod:`models.video.smoothing`.

``NAME.jsonl`` has one line per frame, the stream's answer message
(:func:`app.streams.stream_session.frame_message`) without the live-only ``latency_ms`` and
``dropped``: ``seq``, ``ts_ms``, ``width``, ``height``, ``persons: [{track_id, bbox,
bbox_score, score, keypoints: [{name, x, y, score, visible}]}]`` (image px; ``bbox_score``: the
track's box score at its last detection, null without a detector). The same frames and options
give the same lines as the stream's answers.
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

import cv2
import numpy as np
from tqdm import tqdm

from app.render.overlay import PALETTE, draw_box, draw_skeleton
from app.streams.stream_session import frame_message
from heatpose_cli.args import UsageError
from heatpose_cli.predict_images import pipeline_options
from models.inference.pipeline import PosePipeline
from models.pose.keypoints import KeypointSpec
from models.video.smoothing import OneEuroParams, savgol
from models.video.video_files import write_video
from models.video.video_tracking import FramePerson, TrackingOptions, VideoTracker


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


def tracking_options(args: argparse.Namespace) -> TrackingOptions:
    """The flags as :class:`TrackingOptions` (``--smoothing savgol``: raw tracks, smoothed
    afterwards by :func:`smooth_savgol`)."""
    one_euro = OneEuroParams(args.min_cutoff, args.beta, args.d_cutoff)
    return TrackingOptions(
        det_interval=args.det_interval,
        max_persons=args.max_persons,
        kpt_thr=args.kpt_thr,
        smoothing=one_euro if args.smoothing == "one_euro" else None,
    )


def frame_ts_ms(seq: int, fps: float) -> float:
    """Frame ``seq``'s timestamp, ms from the start."""
    return seq * 1000.0 / fps


def track_frames(
    pipeline: PosePipeline,
    frames: Iterator[np.ndarray],
    fps: float,
    args: argparse.Namespace,
    *,
    progress: tqdm | None = None,
) -> list[list[FramePerson]]:
    """Every frame's tracked persons (``frames``: ``(H, W, 3)`` uint8 RGB; see the module
    docstring)."""
    tracker = VideoTracker(tracking_options(args), has_detector=pipeline.detector is not None)
    options = pipeline_options(args)
    out: list[list[FramePerson]] = []
    for seq, frame in enumerate(frames):
        h, w = frame.shape[:2]
        plan = tracker.plan(w, h)
        boxes = None if plan.boxes is None else [plan.boxes]
        (found,) = pipeline([frame], boxes, replace(options, detect=plan.detect))
        out.append(tracker.update(plan, found, timestamp_s=frame_ts_ms(seq, fps) / 1000.0))
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


def draw_tracks(
    frame: np.ndarray, persons: Sequence[FramePerson], spec: KeypointSpec, kpt_thr: float
) -> np.ndarray:
    """``frame (H, W, 3)`` uint8 RGB with each track's box, ``#id`` (and detector score) and
    skeleton in its colour (:data:`app.render.overlay.PALETTE` by track id)."""
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
        frames = track_frames(pipeline, read_frames(path), info.fps, args, progress=bar)
    if args.smoothing == "savgol":
        smooth_savgol(frames, args.savgol_window, args.savgol_order)
    lines = (
        frame_message(
            seq,
            frame_ts_ms(seq, info.fps),
            info.size,
            persons,
            names=spec.names,
            kpt_thr=args.kpt_thr,
        )
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
