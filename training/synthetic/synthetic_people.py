"""Procedural people for the synthetic data set: a random COCO-skeleton pose and its drawing.

A person is posed in image pixels ``(x, y)`` (y down) from random limb proportions and joint
angles, then painted with OpenCV as a mannequin: limbs as thick strokes, ball joints as
outlined blobs, hands and shoes, a torso polygon and a head. The face is the only cue that
tells left from right, exactly as for real people: a person seen from the front shows a face
and has their left side on the viewer's right; seen from behind, the head shows hair only and
the left side is on the viewer's left. The drawing is therefore mirror-consistent (the mirror
image of a person, with left/right labels swapped, is again a valid person), so flip
augmentation and flip testing stay meaningful.

Everything is drawn twice, on the image and on a per-person mask, so that the scene can tell
which person owns each pixel (for visibility flags and boxes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# COCO keypoint order (models.pose.keypoints.COCO_KEYPOINTS).
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16
NUM_KEYPOINTS = 17


@dataclass
class Person:
    """A posed person. ``keypoints (17, 2)`` image px; ``labelled (17,)`` False where a point
    has no meaningful location (the face of a person seen from behind)."""

    keypoints: np.ndarray
    labelled: np.ndarray
    facing_front: bool
    height: float
    thickness: float
    head: np.ndarray
    head_up: np.ndarray
    head_radius: float


def _unit(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([np.sin(r), -np.cos(r)])  # 0 deg = up, clockwise positive on screen


def sample_person(rng: np.random.Generator, pelvis: np.ndarray, height: float) -> Person:
    """A random plausible pose for a person ``height`` px tall whose pelvis is at ``pelvis``."""
    j = lambda: rng.uniform(0.88, 1.12)  # noqa: E731 - per-limb proportion jitter
    front = bool(rng.random() < 0.7)
    lr = 1.0 if front else -1.0  # +1: the person's left is on the viewer's right
    lean = rng.normal(0.0, 8.0) if rng.random() < 0.8 else rng.uniform(-45.0, 45.0)
    up = _unit(lean)
    side = np.array([-up[1], up[0]])  # viewer's right, perpendicular to the torso
    k = np.zeros((NUM_KEYPOINTS, 2))
    neck = pelvis + up * 0.30 * height * j()
    sw, hw = 0.11 * height * j(), 0.07 * height * j()
    shoulder_y = neck - up * 0.02 * height
    for s, sho, hip in ((lr, L_SHO, L_HIP), (-lr, R_SHO, R_HIP)):
        k[sho] = shoulder_y + s * side * sw
        k[hip] = pelvis + s * side * hw
    limbs = (
        (L_SHO, L_ELB, L_WRI, lr, 0.17, 0.15, (-20.0, 175.0), 150.0),
        (R_SHO, R_ELB, R_WRI, -lr, 0.17, 0.15, (-20.0, 175.0), 150.0),
        (L_HIP, L_KNE, L_ANK, lr, 0.24, 0.23, (-12.0, 45.0), 70.0),
        (R_HIP, R_KNE, R_ANK, -lr, 0.24, 0.23, (-12.0, 45.0), 70.0),
    )
    for root, mid, end, s, l1, l2, (amin, amax), bend_max in limbs:
        # Angles measured from "down the torso", positive away from the body's midline.
        a = rng.uniform(amin, amax)
        b = a + rng.uniform(-0.3, 1.0) * bend_max * rng.choice((-1.0, 1.0))
        fs1, fs2 = rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)  # out-of-plane foreshortening
        k[mid] = k[root] + (np.cos(np.deg2rad(a)) * -up + np.sin(np.deg2rad(a)) * s * side) * (
            l1 * height * fs1 * j()
        )
        k[end] = k[mid] + (np.cos(np.deg2rad(b)) * -up + np.sin(np.deg2rad(b)) * s * side) * (
            l2 * height * fs2 * j()
        )
    r = 0.065 * height * j()
    head_up = _unit(lean + rng.normal(0.0, 12.0))
    head_side = np.array([-head_up[1], head_up[0]])
    head = neck + up * 0.03 * height + head_up * r
    yaw = rng.uniform(-0.45, 0.45)
    labelled = np.ones(NUM_KEYPOINTS, dtype=bool)
    k[L_EAR] = head + lr * head_side * 0.92 * r + head_side * yaw * 0.25 * r * lr
    k[R_EAR] = head - lr * head_side * 0.92 * r + head_side * yaw * 0.25 * r * lr
    if front:
        k[NOSE] = head + head_side * yaw * 0.7 * r - head_up * 0.12 * r
        k[L_EYE] = head + head_up * 0.28 * r + head_side * (0.4 + yaw * 0.55) * r
        k[R_EYE] = head + head_up * 0.28 * r + head_side * (-0.4 + yaw * 0.55) * r
    else:
        labelled[[NOSE, L_EYE, R_EYE]] = False
        k[[NOSE, L_EYE, R_EYE]] = head
    thickness = height * rng.uniform(0.035, 0.065)
    return Person(k, labelled, front, height, thickness, head, head_up, r)


def random_color(rng: np.random.Generator, lo: int = 30, hi: int = 235) -> tuple[int, ...]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def shade(color: tuple[int, ...], f: float) -> tuple[int, ...]:
    return tuple(int(min(max(c * f, 0.0), 255.0)) for c in color)


SKIN = ((60, 80, 120), (90, 130, 190), (120, 160, 220), (150, 190, 235), (40, 60, 90))
HAIR = ((20, 20, 20), (30, 50, 90), (60, 90, 140), (200, 200, 200), (40, 40, 60))


class Painter:
    """Draws each primitive on the image (BGR uint8) and on the person mask (uint8)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray) -> None:
        self.image, self.mask = image, mask

    @staticmethod
    def _pt(p: np.ndarray) -> tuple[int, int]:
        return round(float(p[0]) * 16), round(float(p[1]) * 16)  # 4 fractional bits

    def line(self, a: np.ndarray, b: np.ndarray, color: tuple[int, ...], t: float) -> None:
        t = max(round(float(t)), 1)
        for img, c in ((self.image, color), (self.mask, 255)):
            cv2.line(img, self._pt(a), self._pt(b), c, t, cv2.LINE_AA, shift=4)

    def circle(self, c: np.ndarray, r: float, color: tuple[int, ...], outline: bool = True) -> None:
        rr = max(round(float(r) * 16), 16)
        cv2.circle(self.image, self._pt(c), rr, color, -1, cv2.LINE_AA, shift=4)
        cv2.circle(self.mask, self._pt(c), rr, 255, -1, cv2.LINE_AA, shift=4)
        if outline:
            cv2.circle(self.image, self._pt(c), rr, shade(color, 0.35), 1, cv2.LINE_AA, shift=4)

    def polygon(self, pts: np.ndarray, color: tuple[int, ...]) -> None:
        p: Any = np.round(pts * 16).astype(np.int32)[None]
        cv2.fillPoly(self.image, p, color, cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.mask, p, 255, cv2.LINE_AA, shift=4)


def _head(p: Painter, person: Person, rng: np.random.Generator) -> None:
    k, r, c = person.keypoints, person.head_radius, person.head
    skin, hair = SKIN[rng.integers(len(SKIN))], HAIR[rng.integers(len(HAIR))]
    p.circle(c, r, hair if not person.facing_front else skin)
    for ear in (L_EAR, R_EAR):
        p.circle(k[ear], 0.28 * r, shade(skin, 0.85))
    if not person.facing_front:
        return
    # Hair cap on the upper part of a front-facing head, then the face.
    up, side = person.head_up, np.array([-person.head_up[1], person.head_up[0]])
    phi = np.linspace(0.05 * np.pi, 0.95 * np.pi, 16)[:, None]
    cap = c + r * (np.cos(phi) * side + np.sin(phi) * up) + up * 0.15 * r
    p.polygon(cap, hair)
    for eye in (L_EYE, R_EYE):
        p.circle(k[eye], 0.2 * r, (245, 245, 245))
        p.circle(k[eye], 0.1 * r, (20, 20, 20), outline=False)
    p.circle(k[NOSE], 0.16 * r, shade(skin, 0.6))


def draw_person(
    image: np.ndarray, mask: np.ndarray, person: Person, rng: np.random.Generator
) -> None:
    """Paint ``person`` on ``image`` (H, W, 3) BGR uint8 and its pixels on ``mask`` (H, W) uint8.

    ``mask`` must be zero on entry; it is 255 where the person was drawn (before texturing).
    """
    k, t = person.keypoints, person.thickness
    p = Painter(image, mask)
    top, bottom = random_color(rng), random_color(rng)
    skin, shoe = SKIN[rng.integers(len(SKIN))], random_color(rng, 10, 120)
    sleeve = top if rng.random() < 0.5 else skin
    for hip, knee, ankle in ((L_HIP, L_KNE, L_ANK), (R_HIP, R_KNE, R_ANK)):
        p.line(k[hip], k[knee], bottom, 1.15 * t)
        p.line(k[knee], k[ankle], bottom, 1.0 * t)
        p.circle(k[knee], 0.62 * t, shade(bottom, 0.7))
        p.circle(k[ankle], 0.6 * t, shoe)
    neck = (k[L_SHO] + k[R_SHO]) / 2
    p.line(neck, (k[L_EAR] + k[R_EAR]) / 2, skin, 0.8 * t)
    p.polygon(np.stack([k[L_SHO], k[R_SHO], k[R_HIP], k[L_HIP]]), top)
    for j in (L_HIP, R_HIP):
        p.circle(k[j], 0.6 * t, shade(bottom, 0.75))
    for sho, elb, wri in ((L_SHO, L_ELB, L_WRI), (R_SHO, R_ELB, R_WRI)):
        p.circle(k[sho], 0.6 * t, shade(top, 0.75))
        p.line(k[sho], k[elb], top, 0.9 * t)
        p.line(k[elb], k[wri], sleeve, 0.8 * t)
        p.circle(k[elb], 0.5 * t, shade(top, 0.7))
        p.circle(k[wri], 0.5 * t, skin)
    texture(image, mask, rng)
    _head(p, person, rng)


def texture(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Modulate the brightness of the masked pixels with stripes, checks or noise."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return
    kind = rng.integers(4)
    if kind == 0:
        return
    x0, y0 = xs.min(), ys.min()
    h, w = ys.max() - y0 + 1, xs.max() - x0 + 1
    if kind == 3:
        small = rng.uniform(0.75, 1.25, size=(max(h // 6, 1), max(w // 6, 1)))
        mod = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        theta, period = rng.uniform(0, np.pi), rng.uniform(4.0, 14.0)
        u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period
        pattern = np.sin(u * np.pi) if kind == 1 else np.sign(np.sin(u * np.pi) * np.sin(v * np.pi))
        mod = 1.0 + 0.2 * pattern
    roi = image[y0 : y0 + h, x0 : x0 + w]
    m = mask[y0 : y0 + h, x0 : x0 + w] > 0
    roi[m] = np.clip(roi[m] * mod[m][:, None], 0, 255).astype(np.uint8)
