"""Top-down sample preparation: person region, augmentation, crop, targets.

One person ``(image, keypoints, box)`` becomes a uint8 RGB crop of the model's input size, target
heatmaps and weights. Warps go through :mod:`models.pose.geometry`, targets through
:class:`models.pose.codec.HeatmapCodec`; nothing here builds a matrix or a heatmap by itself.

The training augmentation is the published mmpose COCO recipe: random flip (0.5), half-body
(0.3), box shift 0.16 (p 0.3), scale x[0.5, 1.5] (p 1), rotation +-80 deg (p 0.6), shift / scale
/ rotation drawn from a normal truncated to +-1 (scaled by these factors); photometric jitter is
optional and off by default. All randomness comes from the ``rng`` passed in, so a sample is a
function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.pose import geometry
from models.pose.codec import HeatmapCodec
from models.pose.keypoints import KeypointSpec


@dataclass(frozen=True, kw_only=True)
class AugmentParams:
    """Training augmentation; the defaults are the published COCO recipe."""

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 9  # labelled keypoints needed to try half-body
    half_body_padding: float = 1.5
    upper_body_prob: float = 0.7  # prefer the upper body when both halves qualify
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    photometric: bool = False


NO_AUGMENT = AugmentParams(
    flip_prob=0.0,
    half_body_prob=0.0,
    shift_factor=0.0,
    shift_prob=0.0,
    scale_range=(1.0, 1.0),
    scale_prob=0.0,
    rotate_factor=0.0,
    rotate_prob=0.0,
    photometric=False,
)
"""Evaluation: the plain ground-truth region, unrotated."""


@dataclass
class Sample:
    """One prepared person.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB crop, input px.
        heatmaps: ``(K, H, W)`` float32 targets, heatmap px.
        weights: ``(K,)`` float32 target weights (0: unlabelled or off the heatmap).
        keypoints: ``(K, 2)`` float64 keypoints in input px (after all augmentation).
        visible: ``(K,)`` the COCO flags after flipping (0 unlabelled, 1, 2).
        center, scale: ``(2,)`` the region, image px (after augmentation); rotation in degrees.
    """

    image: np.ndarray
    heatmaps: np.ndarray
    weights: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: float


def truncated_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` draws of a standard normal truncated to [-1, 1] (rejection sampling)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 1
    return out


def flip_person(
    image: np.ndarray, keypoints: np.ndarray, center: np.ndarray, spec: KeypointSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror an image (H, W, C) horizontally with its person.

    Pixel column ``j`` goes to ``W - 1 - j``, so image-px points map ``x -> W - 1 - x``.
    ``keypoints`` ``(K, 3)`` (x, y, v) are mirrored and their left/right rows swapped
    (``spec.flip_indices``); unlabelled rows stay unlabelled. ``center`` ``(2,)`` is mirrored.
    """
    width = image.shape[1]
    kp = keypoints[list(spec.flip_indices)].copy()
    labelled = kp[:, 2] > 0
    kp[labelled, 0] = width - 1 - kp[labelled, 0]
    return cv2.flip(image, 1), kp, np.array([width - 1 - center[0], center[1]])


def half_body_region(
    keypoints: np.ndarray,
    spec: KeypointSpec,
    input_size: tuple[int, int],
    params: AugmentParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """mmpose's RandomHalfBody: the region ``(center, scale)`` (image px) of the upper or lower
    body's labelled keypoints (``keypoints (K, 3)``), or ``None`` when it does not apply."""
    labelled = keypoints[:, 2] > 0
    if labelled.sum() < params.half_body_min_keypoints or rng.random() >= params.half_body_prob:
        return None
    upper = [i for i in spec.upper_body if labelled[i]]
    lower = [i for i in spec.lower_body if labelled[i]]
    prefer_upper = rng.random() < params.upper_body_prob
    if len(upper) < 2 and len(lower) < 3:
        return None
    ids = upper if len(lower) < 3 or (len(upper) >= 2 and prefer_upper) else lower
    pts = keypoints[ids, :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    _, scale = geometry.box_to_center_scale(
        np.concatenate([lo, hi - lo]), input_size, padding=params.half_body_padding
    )
    return pts.mean(axis=0), scale


def photometric_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter of an (h, w, 3) uint8 RGB crop."""
    alpha, beta = rng.uniform(0.75, 1.25), rng.uniform(-32, 32)
    out = cv2.convertScaleAbs(image, alpha=alpha, beta=beta)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = cv2.convertScaleAbs(hsv[..., 1], alpha=rng.uniform(0.7, 1.3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


class TopDownTransform:
    """Prepares one person for the network.

    Args:
        codec: makes the targets; its ``input_size`` ``(w, h)`` is the crop size.
        spec: keypoint spec (flip pairs, body halves).
        params: augmentation (:data:`NO_AUGMENT` for evaluation-style samples).
        padding: box enlargement of :func:`models.pose.geometry.box_to_center_scale`.
    """

    def __init__(
        self,
        codec: HeatmapCodec,
        spec: KeypointSpec,
        params: AugmentParams | None = None,
        padding: float = 1.25,
    ) -> None:
        self.codec, self.spec = codec, spec
        self.params = params or AugmentParams()
        self.padding = padding

    def __call__(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        box_xywh: np.ndarray,
        rng: np.random.Generator,
        bgr: bool = True,
    ) -> Sample:
        """Prepare a person.

        Args:
            image: ``(H, W, 3)`` uint8 image, BGR (as cv2 decodes it) unless ``bgr=False``.
            keypoints: ``(K, 3)`` ``(x, y, v)`` image px with COCO flags.
            box_xywh: ``(4,)`` the person's box, image px.
            rng: the source of all random choices.
        """
        p, input_size = self.params, self.codec.input_size
        kp = np.asarray(keypoints, dtype=np.float64).copy()
        center, scale = geometry.box_to_center_scale(box_xywh, input_size, self.padding)
        if p.flip_prob > 0 and rng.random() < p.flip_prob:
            image, kp, center = flip_person(image, kp, center, self.spec)
        region = half_body_region(kp, self.spec, input_size, p, rng) if p.half_body_prob else None
        if region is not None:
            center, scale = region
        draws = truncated_normal(rng, 4)  # shift x, shift y, scale, rotation
        if rng.random() < p.shift_prob:
            center = center + draws[:2] * p.shift_factor * scale
        lo, hi = p.scale_range
        if rng.random() < p.scale_prob:
            scale = scale * (draws[2] * (hi - lo) * 0.5 + (hi + lo) * 0.5)
        rotation = float(draws[3] * p.rotate_factor) if rng.random() < p.rotate_prob else 0.0
        matrix = geometry.get_warp_matrix(center, scale, rotation, input_size)
        crop = geometry.warp_image(image, matrix, input_size)
        if bgr:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        if p.photometric:
            crop = photometric_jitter(crop, rng)
        points = geometry.transform_points(kp[:, :2], matrix)
        heatmaps, weights = self.codec.encode(points, kp[:, 2])
        return Sample(crop, heatmaps, weights, points, kp[:, 2], center, scale, rotation)
