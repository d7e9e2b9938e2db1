"""Synthetic video: the procedural people of :mod:`training.synthetic.synthetic_people` walking
along paths.

``make_video(scene)`` returns RGB frames and per-frame ground truth for four scenes:

- ``"crossing"``: two people walk past each other (the nearer one, larger, passes in front);
- ``"leave_and_return"``: one person walks out of the frame on the right and comes back;
- ``"static"``: one person standing still;
- ``"constant_speed"``: one person walking left to right at ``speed`` px/s.

Each person keeps one random pose and look for the whole video (the same seeds every frame);
walkers swing their legs and arms with their stride. Ground truth per frame and person: the
person's id, the box of their drawn pixels (xyxy, clipped to the image), all 17 keypoints
``(x, y)`` image px (also those outside the image) and COCO visibility flags (2 visible, 1
hidden by the other person, 0 not labelled or outside the image). A person wholly outside the
image is absent from that frame's truth. The camera is still: one background per video plus
fresh sensor noise per frame.

``python -m training.synthetic.synthetic_video --scene crossing --out clip.y4m`` writes a video file
(``.y4m``, ``.mp4`` or ``.avi``) and its truth as JSON next to it (``clip.json``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from models.video.video_files import write_video, write_y4m
from training.synthetic.dataset import background, visibility
from training.synthetic.synthetic_people import (
    L_ANK,
    L_ELB,
    L_HIP,
    L_KNE,
    L_SHO,
    L_WRI,
    R_ANK,
    R_ELB,
    R_HIP,
    R_KNE,
    R_SHO,
    R_WRI,
    Person,
    draw_person,
    sample_person,
)

SCENES = ("crossing", "leave_and_return", "static", "constant_speed")


@dataclass(frozen=True)
class Walker:
    """A person on a path: ``waypoints`` rows ``(t s, x px, y px)`` of the pelvis, linearly
    interpolated (held before the first and after the last); ``height`` px; ``seed`` fixes the
    pose and the look; ``depth``: drawing order, nearer (larger) people are drawn last."""

    person_id: int
    seed: int
    height: float
    waypoints: tuple[tuple[float, float, float], ...]
    depth: float = 0.0

    def pelvis(self, t: float) -> np.ndarray:
        w = np.asarray(self.waypoints, dtype=np.float64)
        return np.array([np.interp(t, w[:, 0], w[:, 1]), np.interp(t, w[:, 0], w[:, 2])])

    def distance(self, t: float) -> float:
        """Path length (px) walked by time ``t`` (drives the stride)."""
        w = np.asarray(self.waypoints, dtype=np.float64)
        ts = np.append(w[:, 0][w[:, 0] < t], t)
        pts = np.stack([self.pelvis(float(s)) for s in ts])
        return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


@dataclass(frozen=True)
class PersonTruth:
    """Ground truth of one person in one frame: ``box (4,)`` xyxy image px, ``keypoints
    (17, 2)`` image px, ``flags (17,)`` COCO visibility 0/1/2."""

    person_id: int
    box: np.ndarray
    keypoints: np.ndarray
    flags: np.ndarray


@dataclass
class SyntheticVideo:
    """``frames``: T images (H, W, 3) uint8 RGB; ``truth``: T lists of :class:`PersonTruth`;
    ``timestamps (T,)`` seconds; ``fps``."""

    frames: list[np.ndarray]
    truth: list[list[PersonTruth]]
    timestamps: np.ndarray
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames."""
        h, w = self.frames[0].shape[:2]
        return w, h


def _rotate_about(points: np.ndarray, center: np.ndarray, deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    m = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    return (points - center) @ m.T + center


def _posed(base: Person, walker: Walker, t: float, swing: float) -> Person:
    """``base`` (posed with its pelvis at the origin) moved to the walker's place at ``t``,
    legs and arms swung by ``swing`` degrees (opposite sides in opposite phase)."""
    k = base.keypoints.copy()
    for root, mid, end, s in (
        (L_HIP, L_KNE, L_ANK, 1.0),
        (R_HIP, R_KNE, R_ANK, -1.0),
        (L_SHO, L_ELB, L_WRI, -0.7),
        (R_SHO, R_ELB, R_WRI, 0.7),
    ):
        k[[mid, end]] = _rotate_about(k[[mid, end]], k[root], s * swing)
    shift = walker.pelvis(t)
    return replace(base, keypoints=k + shift, head=base.head + shift)


def render(
    walkers: list[Walker], *, width: int, height: int, fps: float, num_frames: int, seed: int = 0
) -> SyntheticVideo:
    """Draw ``walkers`` on a still background for ``num_frames`` frames at ``fps``."""
    rng = np.random.default_rng(seed)
    bg = background(rng, width, height)  # BGR
    bases = {
        w.person_id: sample_person(np.random.default_rng([seed, w.seed]), np.zeros(2), w.height)
        for w in walkers
    }
    order = sorted(walkers, key=lambda w: w.depth)
    # Sensor noise (std 2): a few fields drawn once and cycled, to keep generation fast.
    noise = [np.rint(rng.normal(0.0, 2.0, size=bg.shape)).astype(np.int16) for _ in range(7)]
    frames: list[np.ndarray] = []
    truth: list[list[PersonTruth]] = []
    times = np.arange(num_frames) / fps
    for t in times:
        img = bg.copy()
        owner = np.zeros((height, width), np.int16)
        people: list[tuple[Walker, Person, np.ndarray]] = []
        for w in order:
            moving = np.linalg.norm(w.pelvis(t + 0.01) - w.pelvis(t)) > 0
            phase = 2 * np.pi * w.distance(float(t)) / (0.9 * w.height)
            person = _posed(bases[w.person_id], w, float(t), 20.0 * np.sin(phase) * moving)
            mask = np.zeros((height, width), np.uint8)
            draw_person(img, mask, person, np.random.default_rng([seed, w.seed, 1]))
            owner[mask > 127] = w.person_id
            people.append((w, person, mask))
        noisy = cv2.add(img.astype(np.int16), noise[len(frames) % len(noise)], dtype=cv2.CV_16S)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8)[..., ::-1].copy())
        row = []
        for w, person, mask in sorted(people, key=lambda p: p[0].person_id):
            ys, xs = np.nonzero(mask > 127)
            if len(xs) == 0:
                continue
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
            flags = visibility(person.keypoints, person.labelled, owner, w.person_id)[:, 2]
            row.append(PersonTruth(w.person_id, box, person.keypoints.copy(), flags.astype(int)))
        truth.append(row)
    return SyntheticVideo(frames, truth, times, fps)


def scene_walkers(scene: str, *, width: int, height: int, speed: float) -> tuple[list, float]:
    """The walkers of ``scene`` and its length in seconds (pelvis paths in image px)."""
    w, h = float(width), float(height)
    if scene == "static":
        return [Walker(1, 11, 0.6 * h, ((0.0, 0.5 * w, 0.55 * h),))], 2.0
    if scene == "constant_speed":
        x0, x1 = 0.2 * w, 0.8 * w
        return [Walker(1, 12, 0.6 * h, ((0.0, x0, 0.55 * h), ((x1 - x0) / speed, x1, 0.55 * h)))], (
            x1 - x0
        ) / speed
    if scene == "crossing":
        dur = 0.8 * w / speed
        near = Walker(1, 13, 0.62 * h, ((0.0, 0.1 * w, 0.58 * h), (dur, 0.9 * w, 0.58 * h)), 1.0)
        far = Walker(2, 14, 0.52 * h, ((0.0, 0.9 * w, 0.5 * h), (dur, 0.1 * w, 0.5 * h)), 0.0)
        return [near, far], dur
    if scene == "leave_and_return":
        x0, out_x = 0.7 * w, w + 0.3 * h  # out_x: far enough right that nothing of them shows
        go = (out_x - x0) / speed
        y = 0.55 * h
        path = ((0.0, x0, y), (go, out_x, y), (go + 1.0, out_x, y), (2 * go + 1.0, x0, y))
        return [Walker(1, 15, 0.6 * h, path)], 2 * go + 1.0
    raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")


def make_video(
    scene: str,
    *,
    width: int = 320,
    height: int = 240,
    fps: float = 30.0,
    speed: float = 96.0,
    seed: int = 0,
) -> SyntheticVideo:
    """One of :data:`SCENES` as frames and truth; walkers move at ``speed`` px/s."""
    walkers, seconds = scene_walkers(scene, width=width, height=height, speed=speed)
    n = round(seconds * fps) + 1
    return render(walkers, width=width, height=height, fps=fps, num_frames=n, seed=seed)


def truth_to_json(video: SyntheticVideo) -> list[dict]:
    """Per frame: ``{"frame", "ts", "persons": [{"person_id", "bbox" xyxy, "keypoints" [[x, y,
    flag], ...]}]}``, image px."""
    return [
        {
            "frame": i,
            "ts": float(video.timestamps[i]),
            "persons": [
                {
                    "person_id": p.person_id,
                    "bbox": [round(float(v), 2) for v in p.box],
                    "keypoints": [
                        [round(float(x), 2), round(float(y), 2), int(f)]
                        for (x, y), f in zip(p.keypoints, p.flags, strict=True)
                    ],
                }
                for p in row
            ],
        }
        for i, row in enumerate(video.truth)
    ]


WRITERS: dict[str, Callable[..., int]] = {
    ".y4m": write_y4m,
    ".mp4": write_video,
    ".avi": write_video,
}


if __name__ == "__main__":  # python -m training.synthetic.synthetic_video (docs)
    from heatpose_cli.synth_video import main

    sys.exit(main())
