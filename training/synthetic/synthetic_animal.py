"""Procedural four-legged animals for the synthetic data set: a second, non-person skeleton.

An animal is seen from the side, facing the viewer's right or left, with 12 keypoints (names
below, in channel order). As for real animals, what tells left from right is the facing
direction together with which legs are near the viewer (drawn in front and lighter) and which
are far (drawn behind, darker): an animal facing right shows its left side. The drawing is
mirror-consistent (the mirror image of an animal, with left/right labels swapped, is again a
valid animal facing the other way), so flip augmentation and the flip test stay meaningful.

Drawing reuses the person painter of :mod:`training.synthetic.synthetic_people` (image and mask at
once), so occlusion, truncation, visibility flags and boxes come from the same scene code in
:mod:`training.synthetic.dataset`. Coordinates are image px ``(x, y)``, y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic.synthetic_people import Painter, random_color, shade, texture

NAMES = (
    "nose",
    "withers",
    "tail_base",
    "tail_tip",
    "left_front_knee",
    "left_front_paw",
    "right_front_knee",
    "right_front_paw",
    "left_back_knee",
    "left_back_paw",
    "right_back_knee",
    "right_back_paw",
)
"""The animal's 12 keypoint names, in channel order (4 left/right pairs by name)."""
NOSE, WITHERS, TAIL_BASE, TAIL_TIP = 0, 1, 2, 3
LF_KNEE, LF_PAW, RF_KNEE, RF_PAW, LB_KNEE, LB_PAW, RB_KNEE, RB_PAW = range(4, 12)
NUM_KEYPOINTS = len(NAMES)
SKELETON = (
    (NOSE, WITHERS),
    (WITHERS, TAIL_BASE),
    (TAIL_BASE, TAIL_TIP),
    (WITHERS, LF_KNEE),
    (LF_KNEE, LF_PAW),
    (WITHERS, RF_KNEE),
    (RF_KNEE, RF_PAW),
    (TAIL_BASE, LB_KNEE),
    (LB_KNEE, LB_PAW),
    (TAIL_BASE, RB_KNEE),
    (RB_KNEE, RB_PAW),
)
"""Links as 0-based channel index pairs."""


@dataclass
class Animal:
    """A posed animal: ``keypoints (12, 2)`` image px, ``labelled (12,)`` (all True: every
    point has a location), ``facing`` +1 (viewer's right) or -1, the spine ``forward`` and body
    ``down`` unit vectors, ``length`` (withers to tail base, px), leg ``roots`` (4, 2) in
    channel-pair order (left front, right front, left back, right back), ``head`` centre and
    ``head_radius`` px, ``depth`` (body depth, px) and leg ``thickness`` px."""

    keypoints: np.ndarray
    labelled: np.ndarray
    facing: int
    forward: np.ndarray
    down: np.ndarray
    length: float
    roots: np.ndarray
    head: np.ndarray
    head_radius: float
    depth: float
    thickness: float


def _direction(down: np.ndarray, forward: np.ndarray, deg: float) -> np.ndarray:
    """Unit vector ``deg`` degrees from ``down`` toward ``forward``."""
    r = np.deg2rad(deg)
    return np.cos(r) * down + np.sin(r) * forward


def sample_animal(rng: np.random.Generator, center: np.ndarray, length: float) -> Animal:
    """A random plausible standing or walking pose, body centre at ``center`` (image px),
    ``length`` px from withers to tail base."""
    d = 1 if rng.random() < 0.5 else -1
    a = np.deg2rad(rng.normal(0.0, 6.0))  # spine slope, front up when positive
    u = np.array([d * np.cos(a), -np.sin(a)])  # forward along the spine
    v = np.array([d * np.sin(a), np.cos(a)])  # body "down", perpendicular to u
    depth = length * rng.uniform(0.35, 0.5)
    k = np.zeros((NUM_KEYPOINTS, 2))
    k[WITHERS] = center + u * length / 2 - v * depth * 0.45
    k[TAIL_BASE] = center - u * length / 2 - v * depth * 0.4
    leg = length * rng.uniform(0.5, 0.75)
    near_is_left = d > 0
    roots = np.zeros((4, 2))
    front_top = k[WITHERS] + v * depth * 0.8 - u * 0.06 * length
    back_top = k[TAIL_BASE] + v * depth * 0.75 + u * 0.1 * length
    legs = ((LF_KNEE, LF_PAW), (RF_KNEE, RF_PAW), (LB_KNEE, LB_PAW), (RB_KNEE, RB_PAW))
    for i, (knee, paw) in enumerate(legs):
        front, near = i < 2, (knee in (LF_KNEE, LB_KNEE)) == near_is_left
        top = front_top if front else back_top
        roots[i] = top if near else top + u * 0.04 * length - v * 0.04 * depth
        if front:
            t1 = rng.uniform(-30.0, 30.0)
            t2 = t1 - rng.uniform(0.0, 50.0)
        else:
            t1 = rng.uniform(-15.0, 40.0)
            t2 = t1 - rng.uniform(20.0, 70.0)
        k[knee] = roots[i] + _direction(v, u, t1) * leg * 0.5 * rng.uniform(0.9, 1.1)
        k[paw] = k[knee] + _direction(v, u, t2) * leg * 0.5 * rng.uniform(0.9, 1.1)
    neck_dir = _direction(-v, u, rng.uniform(20.0, 75.0))  # from "up" toward forward
    r = length * rng.uniform(0.11, 0.15)
    head = k[WITHERS] + neck_dir * length * rng.uniform(0.3, 0.42)
    k[NOSE] = head + _direction(u, v, rng.uniform(-10.0, 60.0)) * 1.9 * r
    k[TAIL_TIP] = k[TAIL_BASE] + _direction(-u, -v, rng.uniform(-40.0, 70.0)) * length * (
        rng.uniform(0.3, 0.6)
    )
    thickness = length * rng.uniform(0.08, 0.12)
    labelled = np.ones(NUM_KEYPOINTS, dtype=bool)
    return Animal(k, labelled, d, u, v, length, roots, head, r, depth, thickness)


def place_animal(rng: np.random.Generator, width: int, height: int) -> Animal:
    """An animal somewhere in a ``width`` x ``height`` scene, sometimes cut by its border."""
    length = rng.uniform(0.18, 0.42) * width
    center = np.array([rng.uniform(-0.05, 1.05) * width, rng.uniform(0.3, 0.75) * height])
    return sample_animal(rng, center, length)


def draw_animal(
    image: np.ndarray, mask: np.ndarray, animal: Animal, rng: np.random.Generator
) -> None:
    """Paint ``animal`` on ``image`` (H, W, 3) BGR uint8 and its pixels on ``mask`` (H, W) uint8.

    ``mask`` must be zero on entry; it is 255 where the animal was drawn. Far legs first (dark),
    then tail, body, neck and head, then the near legs on top (light).
    """
    k, t, u, v = animal.keypoints, animal.thickness, animal.forward, animal.down
    p = Painter(image, mask)
    coat, paw_colour = random_color(rng), random_color(rng, 10, 90)
    legs = ((0, LF_KNEE, LF_PAW), (1, RF_KNEE, RF_PAW), (2, LB_KNEE, LB_PAW), (3, RB_KNEE, RB_PAW))
    near = {LF_KNEE, LB_KNEE} if animal.facing > 0 else {RF_KNEE, RB_KNEE}

    def leg(i: int, knee: int, paw: int, f: float) -> None:
        colour = shade(coat, f)
        p.line(animal.roots[i], k[knee], colour, 1.1 * t)
        p.line(k[knee], k[paw], colour, 0.8 * t)
        p.circle(k[knee], 0.5 * t, shade(colour, 0.8))
        p.circle(k[paw], 0.55 * t, paw_colour)

    for i, knee, paw in legs:
        if knee not in near:
            leg(i, knee, paw, 0.55)
    p.line(k[TAIL_BASE], k[TAIL_TIP], shade(coat, 0.9), 0.45 * t)
    centre = (k[WITHERS] + k[TAIL_BASE]) / 2 + v * animal.depth * 0.5
    phi = np.linspace(0.0, 2.0 * np.pi, 28, endpoint=False)[:, None]
    body = centre + np.cos(phi) * u * animal.length * 0.6 + np.sin(phi) * v * animal.depth * 0.6
    p.polygon(body, coat)
    p.line(k[WITHERS] + v * animal.depth * 0.3, animal.head, coat, 1.8 * t)
    r = animal.head_radius
    ear = animal.head - v * 0.8 * r - u * 0.1 * r
    p.polygon(np.stack([ear - u * 0.6 * r, ear - v * 0.9 * r, ear + u * 0.3 * r]), shade(coat, 0.7))
    p.circle(animal.head, r, coat)
    p.line(animal.head, k[NOSE], shade(coat, 1.1), 0.9 * r)
    p.circle(k[NOSE], 0.28 * r, (25, 25, 25), outline=False)
    eye = animal.head + u * 0.35 * r - v * 0.25 * r
    p.circle(eye, 0.2 * r, (240, 240, 240))
    p.circle(eye, 0.1 * r, (15, 15, 15), outline=False)
    for i, knee, paw in legs:
        if knee in near:
            leg(i, knee, paw, 1.15)
    texture(image, mask, rng)
