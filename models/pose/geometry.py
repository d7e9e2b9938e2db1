"""Boxes, affine warps and the mapping between image pixels and crop (input) pixels.

The only module that builds affine warps. Conventions:

- Points are ``(x, y)`` in pixels. "Image" pixels are those of the full (oriented) image;
  "input" pixels are those of the model's input crop of size ``input_size = (w, h)``.
- A person region is ``(center, scale)``: ``center`` (2,) in image pixels and ``scale`` (2,)
  the region's ``(width, height)`` in image pixels (no /200 as in the original code).
- The warp maps the region, rotated by ``rot_deg`` degrees counter-clockwise about its centre,
  onto the whole output so that the region's centre lands on ``(w / 2, h / 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.nn import functional as nn_functional


def xyxy_to_xywh(box: np.ndarray | list[float]) -> np.ndarray:
    """``[x1, y1, x2, y2]`` -> ``[x, y, w, h]`` (any leading shape, last axis 4)."""
    b = np.asarray(box, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def xywh_to_xyxy(box: np.ndarray | list[float]) -> np.ndarray:
    """``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` (any leading shape, last axis 4)."""
    b = np.asarray(box, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def box_to_center_scale(
    box_xywh: np.ndarray | list[float],
    input_size: tuple[int, int],
    padding: float = 1.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Person box -> ``(center, scale)`` of the region to crop.

    Args:
        box_xywh: ``(..., 4)`` boxes ``[x, y, w, h]`` in image pixels.
        input_size: the model input ``(w, h)``; the region is enlarged to its aspect ratio.
        padding: factor applied after the aspect-ratio fix (1.25 in SimpleBaselines).

    Returns:
        ``center (..., 2)`` and ``scale (..., 2)`` as ``(width, height)``, image pixels.
    """
    b = np.asarray(box_xywh, dtype=np.float64)
    x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=-1)
    aspect = input_size[0] / input_size[1]
    wider = w > aspect * h
    w2 = np.where(wider, w, h * aspect)
    h2 = np.where(wider, w / aspect, h)
    scale = np.stack([w2, h2], axis=-1) * padding
    return center, scale


def _rotate(v: np.ndarray, rad: float) -> np.ndarray:
    s, c = np.sin(rad), np.cos(rad)
    return np.array([v[0] * c - v[1] * s, v[0] * s + v[1] * c])


def get_warp_matrix(
    center: np.ndarray | list[float],
    scale: np.ndarray | list[float],
    rot_deg: float,
    output_size: tuple[int, int],
    inverse: bool = False,
) -> np.ndarray:
    """The (2, 3) affine matrix from image pixels to output pixels (or back).

    Args:
        center: region centre ``(x, y)``, image pixels.
        scale: region ``(width, height)``, image pixels; only the width sets the zoom
            (the height follows from the output's aspect ratio, as in SimpleBaselines).
        rot_deg: rotation of the region, degrees counter-clockwise.
        output_size: ``(w, h)`` of the output (input crop) in pixels.
        inverse: return the output -> image matrix instead.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` such that ``[x', y'] = M @ [x, y, 1]``.
    """
    c = np.asarray(center, dtype=np.float64)
    src_w = float(np.asarray(scale, dtype=np.float64)[0])
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rad = np.deg2rad(rot_deg)
    # Three corresponding points: centre, a point above the centre, and a third point
    # at a right angle, exactly as cv2.getAffineTransform expects.
    src_dir = _rotate(np.array([0.0, src_w * -0.5]), rad)
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.stack([c, c + src_dir, c + src_dir + np.array([-src_dir[1], src_dir[0]])])
    dst_c = np.array([dst_w * 0.5, dst_h * 0.5])
    dst = np.stack([dst_c, dst_c + dst_dir, dst_c + dst_dir + np.array([-dst_dir[1], dst_dir[0]])])
    if inverse:
        src, dst = dst, src
    return _affine_from_points(src, dst)


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Solve the affine map sending the three ``src`` points onto ``dst`` (float64)."""
    a = np.concatenate([src, np.ones((3, 1))], axis=1)  # (3, 3)
    return np.linalg.solve(a, dst).T  # (2, 3)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine ``matrix`` to ``points`` of shape ``(..., 2)``."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def warp_image(
    image: np.ndarray,
    matrix: np.ndarray,
    output_size: tuple[int, int],
    border_value: int = 0,
) -> np.ndarray:
    """Warp ``image`` (h, w[, C]) with ``matrix`` into an ``output_size`` (w, h) image."""
    return cv2.warpAffine(
        image,
        matrix,
        (int(output_size[0]), int(output_size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value, border_value, border_value),
    )


def crop_person(
    image: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    input_size: tuple[int, int],
    rot_deg: float = 0.0,
) -> np.ndarray:
    """Cut the region ``(center, scale)`` out of ``image`` (H, W, 3) into ``input_size`` (w, h)."""
    return warp_image(image, get_warp_matrix(center, scale, rot_deg, input_size), input_size)


def crop_to_image(
    points: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    input_size: tuple[int, int],
) -> np.ndarray:
    """Map input-pixel points back to image pixels for unrotated crops, vectorised.

    Args:
        points: ``(N, K, 2)`` in input pixels.
        centers: ``(N, 2)`` region centres, image pixels.
        scales: ``(N, 2)`` region sizes, image pixels (the width sets the zoom).
        input_size: ``(w, h)`` of the input crop.

    Returns:
        ``(N, K, 2)`` float64 in image pixels; equals ``transform_points`` with the inverse
        ``get_warp_matrix`` at rotation 0.
    """
    p = np.asarray(points, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)[:, None, :]
    zoom = np.asarray(scales, dtype=np.float64)[:, None, :1] / float(input_size[0])  # px/px
    half = np.array([input_size[0] * 0.5, input_size[1] * 0.5])
    return (p - half) * zoom + c


def crop_persons_batched(
    images: Sequence[torch.Tensor],
    image_index: np.ndarray | Sequence[int],
    centers: np.ndarray,
    scales: np.ndarray,
    input_size: tuple[int, int],
    rot_deg: np.ndarray | Sequence[float] | None = None,
) -> torch.Tensor:
    """:func:`crop_person` for every person of a batch, with one ``affine_grid`` and one
    ``grid_sample`` call on the images' device (CPU or CUDA): the on-device crop path.

    The images are laid out one below the other in a single zero canvas (one zero row between
    them), so no image is copied per person. Conventions match ``cv2.warpAffine`` with
    ``INTER_LINEAR`` and a constant zero border: pixel centres sit at integer image pixels,
    which with ``align_corners=False`` means the normalised coordinate of pixel ``x`` in a
    width ``W`` is ``(2x + 1) / W - 1`` (a half-pixel shift); a sample within one pixel outside
    the image blends with the zero border, a sample further out is zero.
    cv2 interpolates in fixed point, this path in float32: on random boxes, rotations and
    image sizes the crops differ by at most 1 grey level, on average by under 0.001 (measured
    by tests/models/pose/test_geometry.py, on smooth and on pixel-noise images).

    Args:
        images: ``N`` tensors ``(H_i, W_i, 3)`` uint8 (image px), all on one device.
        image_index: ``(B,)`` which image each person is cut from.
        centers: ``(B, 2)`` region centres, image pixels of their image.
        scales: ``(B, 2)`` region sizes ``(w, h)``, image pixels (the width sets the zoom).
        input_size: ``(w, h)`` of the crops, input px.
        rot_deg: ``(B,)`` region rotations in degrees (counter-clockwise), ``None`` = 0.

    Returns:
        ``(B, h, w, 3)`` uint8 crops on the images' device.
    """
    w, h = int(input_size[0]), int(input_size[1])
    idx = np.asarray(image_index, dtype=np.int64).reshape(-1)
    b = len(idx)
    device = images[0].device
    heights = np.array([im.shape[0] for im in images])
    widths = np.array([im.shape[1] for im in images])
    tops = np.concatenate([[0], np.cumsum(heights + 1)[:-1]])  # each image's first canvas row
    canvas = torch.zeros(
        (int(heights.sum() + len(images) - 1), int(widths.max()), 3),
        dtype=torch.uint8,
        device=device,
    )
    for top, im in zip(tops, images, strict=True):
        canvas[top : top + im.shape[0], : im.shape[1]] = im
    rots = np.zeros(b) if rot_deg is None else np.asarray(rot_deg, dtype=np.float64)
    # theta: normalised output coordinates -> image pixels (affine_grid's own base grid is
    # normalised; (w/2, (w-1)/2) undoes its half-pixel convention).
    from_norm = np.array([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]])
    theta = np.stack(
        [
            get_warp_matrix(centers[i], scales[i], float(rots[i]), (w, h), inverse=True) @ from_norm
            for i in range(b)
        ]
    )
    grid = nn_functional.affine_grid(
        torch.from_numpy(theta).to(device, torch.float32), [b, 1, h, w], align_corners=False
    )  # (B, h, w, 2) image pixels (x, y)
    sizes = torch.from_numpy(np.stack([widths[idx], heights[idx]], 1)).to(device)
    inside = ((grid > -1) & (grid < sizes[:, None, None, :].float())).all(-1, keepdim=True)
    offset = torch.from_numpy(tops[idx]).to(device, torch.float32)
    grid = grid + torch.stack([torch.zeros_like(offset), offset], 1)[:, None, None, :]
    hw = torch.tensor([canvas.shape[1], canvas.shape[0]], device=device, dtype=torch.float32)
    grid = torch.where(inside, (2 * grid + 1) / hw - 1, torch.full_like(grid, -2.0))
    src = canvas.permute(2, 0, 1)[None].float()  # (1, 3, Hc, Wc)
    out = nn_functional.grid_sample(
        src,
        grid.reshape(1, b * h, w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    out = out.reshape(3, b, h, w).permute(1, 2, 3, 0)
    return out.round_().clamp_(0, 255).to(torch.uint8)
