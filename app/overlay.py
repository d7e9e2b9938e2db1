"""Overlay rendering for ``/visualize``: heatmaps and skeletons drawn over the image.

Heatmaps are resized to their crop (input pixels), mapped back into the image with the
inverse crop warp of :mod:`models.geometry`, coloured with the jet colormap and blended over the
image inside the cropped regions. Skeleton links and keypoints (from the checkpoint's
:class:`~models.keypoints.KeypointSpec`) are drawn where their scores pass the threshold.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from models import geometry
from models.keypoints import KeypointSpec
from models.persons import PersonResult

Mode = Literal["heatmap", "skeleton", "both"]
LEFT, RIGHT, CENTRE = (255, 140, 0), (0, 150, 255), (60, 220, 60)  # RGB


def heatmap_layer(
    image_size: tuple[int, int],
    people: list[PersonResult],
    input_size: tuple[int, int],
    channel: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel heat and coverage over the whole image.

    Args:
        image_size: ``(W, H)`` of the oriented image.
        people: per person its cropped region (``center``, ``scale`` image px) and its
            ``(K, H, W)`` heatmaps (must not be ``None``).
        input_size: ``(w, h)`` of the network input (crop).
        channel: one keypoint channel, or ``None`` for the maximum over all channels.

    Returns:
        ``heat (H, W)`` float32 in 0..1 (the maximum over persons) and ``cover (H, W)`` float32,
        1 inside some person's crop region, 0 outside.
    """
    heat = np.zeros((image_size[1], image_size[0]), np.float32)
    cover = np.zeros_like(heat)
    ones = np.ones((input_size[1], input_size[0]), np.float32)
    for r in people:
        assert r.heatmaps is not None
        maps = r.heatmaps[channel] if channel is not None else r.heatmaps.max(axis=0)
        in_crop = cv2.resize(np.clip(maps, 0, 1).astype(np.float32), input_size)
        back = geometry.get_warp_matrix(r.center, r.scale, 0.0, input_size, inverse=True)
        np.maximum(heat, geometry.warp_image(in_crop, back, image_size), out=heat)
        np.maximum(cover, geometry.warp_image(ones, back, image_size), out=cover)
    return heat, cover


def blend_heat(image: np.ndarray, heat: np.ndarray, cover: np.ndarray, alpha: float) -> np.ndarray:
    """Jet-coloured ``heat (H, W)`` blended over ``image (H, W, 3)`` RGB where ``cover`` > 0."""
    jet = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    jet = cv2.cvtColor(jet, cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * np.clip(cover, 0, 1))[..., None]
    out = image.astype(np.float32) * (1 - a) + jet * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _colour(spec: KeypointSpec, i: int) -> tuple[int, int, int]:
    name = spec.names[i]
    return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else CENTRE


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    spec: KeypointSpec,
    threshold: float,
    *,
    colour: tuple[int, int, int] | None = None,
) -> None:
    """Draw one person in place: links and keypoints with ``score >= threshold``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, drawn on.
        keypoints: ``(K, 2)`` image px; ``scores``: ``(K,)``.
        colour: one RGB colour for the whole person (e.g. its track's); ``None``: left,
            right and centre colours.
    """
    h, w = image.shape[:2]
    thick = max(1, round(min(h, w) / 250))
    ok = scores >= threshold
    pts = [(round(float(x)), round(float(y))) for x, y in keypoints]
    for a, b in spec.skeleton:
        if ok[a] and ok[b]:
            side = _colour(spec, a) if _colour(spec, a) == _colour(spec, b) else CENTRE
            cv2.line(image, pts[a], pts[b], colour or side, thick, cv2.LINE_AA)
    for i, p in enumerate(pts):
        if ok[i]:
            cv2.circle(image, p, thick + 2, colour or _colour(spec, i), -1, cv2.LINE_AA)
            cv2.circle(image, p, thick + 2, (255, 255, 255), 1, cv2.LINE_AA)


def render(
    image: np.ndarray,
    people: list[PersonResult],
    spec: KeypointSpec,
    input_size: tuple[int, int],
    *,
    mode: Mode = "both",
    channel: int | None = None,
    alpha: float = 0.5,
    threshold: float = 0.3,
) -> np.ndarray:
    """The overlay: ``image (H, W, 3)`` uint8 RGB -> a new ``(H, W, 3)`` uint8 RGB image."""
    out = image.copy()
    if mode in ("heatmap", "both") and people:
        size = (image.shape[1], image.shape[0])
        heat, cover = heatmap_layer(size, people, input_size, channel)
        out = blend_heat(out, heat, cover, alpha)
    if mode in ("skeleton", "both"):
        for r in people:
            draw_skeleton(out, r.keypoints, r.scores, spec, threshold)
    return out


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
