"""Overlay rendering for ``/visualize``: heatmaps, person boxes and skeletons over the image.

Very large images are drawn at a bounded size (longest side ``max_side``, every coordinate
scaled with them). Heatmaps are resized to their crop (input pixels), mapped back into the image
with the inverse crop warp of :mod:`models.pose.geometry`, coloured with the jet colormap and
blended with an opacity proportional to the heat: transparent where the heat is low. Each person
gets its own colour (:data:`PALETTE`, by its index in the answer): its box, labelled ``#1``, ``#2``,
... as on the demo page, and its detector score, and its skeleton (links and keypoints of the
checkpoint's :class:`~models.pose.keypoints.KeypointSpec`) where the keypoint scores reach
``kpt_thr``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from models.inference.pipeline import keypoint_visible
from models.pose import geometry
from models.pose.keypoints import KeypointSpec
from models.pose.persons import PersonResult

Mode = Literal["heatmap", "skeleton", "both"]
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
"""Person colours (RGB), by the person's index in the answer (cycled)."""


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
    """Jet-coloured ``heat (H, W)`` blended over ``image (H, W, 3)`` RGB with opacity
    ``alpha * heat`` inside ``cover``: where the heat is 0 the image shows unchanged."""
    jet = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    jet = cv2.cvtColor(jet, cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * np.clip(cover, 0, 1) * np.clip(heat, 0, 1))[..., None]
    out = image.astype(np.float32) * (1 - a) + jet * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    spec: KeypointSpec,
    kpt_thr: float,
    colour: tuple[int, int, int] = PALETTE[0],
) -> None:
    """Draw one person in place, in ``colour``: links and keypoints with ``score >= kpt_thr``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, drawn on.
        keypoints: ``(K, 2)`` image px; ``scores``: ``(K,)``.
    """
    h, w = image.shape[:2]
    thick = max(1, round(min(h, w) / 250))
    ok = keypoint_visible(scores, kpt_thr)
    pts = [(round(float(x)), round(float(y))) for x, y in keypoints]
    for a, b in spec.skeleton:
        if ok[a] and ok[b]:
            cv2.line(image, pts[a], pts[b], colour, thick, cv2.LINE_AA)
    for i, p in enumerate(pts):
        if ok[i]:
            cv2.circle(image, p, thick + 2, colour, -1, cv2.LINE_AA)
            cv2.circle(image, p, thick + 2, (255, 255, 255), 1, cv2.LINE_AA)


def box_label(index: int, box_score: float | None) -> str:
    """The label of the person at ``index`` (0-based, in the answer's order): ``#1`` for the
    first, as the demo page numbers them, and its detector score if any."""
    return f"#{index + 1}" if box_score is None else f"#{index + 1} {box_score:.2f}"


def draw_box(image: np.ndarray, person: PersonResult, index: int, colour: tuple[int, ...]) -> None:
    """Draw one person's box in place, labelled by :func:`box_label`."""
    h, w = image.shape[:2]
    thick = max(1, round(min(h, w) / 400))
    x1, y1, x2, y2 = (round(float(v)) for v in person.box)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
    label = box_label(index, person.box_score)
    scale = max(0.4, min(h, w) / 1000)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    top = max(y1, th + base + 2)
    cv2.rectangle(image, (x1, top - th - base - 2), (x1 + tw + 4, top), colour, -1)
    cv2.putText(
        image, label, (x1 + 2, top - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick
    )


def resize_with(
    image: np.ndarray, people: list[PersonResult], size: tuple[int, int]
) -> tuple[np.ndarray, list[PersonResult]]:
    """``image (H, W, 3)`` resized to ``size = (w, h)`` (INTER_AREA) and ``people`` mapped into
    it (:meth:`~models.pose.persons.PersonResult.resized` by ``(w / W, h / H)``); the same objects
    when ``size`` is the image's own."""
    h, w = image.shape[:2]
    if size == (w, h):
        return image, people
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    fx, fy = size[0] / w, size[1] / h
    return small, [r.resized(fx, fy) for r in people]


def bounded(
    image: np.ndarray, people: list[PersonResult], max_side: int
) -> tuple[np.ndarray, list[PersonResult]]:
    """``image`` shrunk so its longest side is at most ``max_side`` (INTER_AREA), and the
    persons' boxes, keypoints and regions scaled with it (unchanged when it already fits)."""
    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f >= 1.0:
        return image, people
    return resize_with(image, people, (max(1, round(w * f)), max(1, round(h * f))))


def render(
    image: np.ndarray,
    people: list[PersonResult],
    spec: KeypointSpec,
    input_size: tuple[int, int],
    *,
    mode: Mode = "both",
    channel: int | None = None,
    alpha: float = 0.5,
    kpt_thr: float = 0.3,
    max_side: int = 2048,
) -> np.ndarray:
    """The overlay: ``image (H, W, 3)`` uint8 RGB -> a new ``(h, w, 3)`` uint8 RGB image, the
    same size unless the longest side exceeds ``max_side`` (then scaled to it)."""
    out, people = bounded(image, people, max_side)
    out = out.copy()
    if mode in ("heatmap", "both") and people:
        size = (out.shape[1], out.shape[0])
        heat, cover = heatmap_layer(size, people, input_size, channel)
        out = blend_heat(out, heat, cover, alpha)
    if mode in ("skeleton", "both"):
        for i, r in enumerate(people):
            colour = PALETTE[i % len(PALETTE)]
            draw_box(out, r, i, colour)
            draw_skeleton(out, r.keypoints, r.scores, spec, kpt_thr, colour)
    return out


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
