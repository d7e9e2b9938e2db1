"""Writing video files from RGB frames: YUV4MPEG2 (.y4m, 4:2:0) and MP4 / AVI through OpenCV.

``.y4m`` is raw video with a one-line header: what Chromium's fake camera
(``--use-file-for-fake-video-capture``) and most codecs' test tools read. Frames are
converted to 8-bit Y'CbCr with the BT.601 matrix in limited range (Y 16..235, Cb/Cr 16..240),
the default of FFmpeg and OpenCV for 4:2:0; chroma is the mean of each 2x2 block (centred
siting, ``C420jpeg``). Frames are ``(H, W, 3)`` uint8 RGB with even H and W.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

# BT.601, limited range: rows Y, Cb, Cr; columns R, G, B (for values 0..255), then offsets.
_BT601 = (
    np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
    / 255.0
)
_OFFSET = np.array([16.0, 128.0, 128.0])

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
"""Codec used per file suffix by :func:`write_video`."""


def rgb_to_i420(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 RGB -> planes ``Y (H, W)``, ``U (H/2, W/2)``, ``V (H/2, W/2)`` uint8."""
    h, w = frame.shape[:2]
    if frame.ndim != 3 or frame.shape[2] != 3 or h % 2 or w % 2:
        raise ValueError(f"need an (H, W, 3) frame with even H and W, got {frame.shape}")
    rgb = frame.astype(np.float64)
    y = rgb @ _BT601[0] + _OFFSET[0]
    block = rgb.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))  # 2x2 means (H/2, W/2, 3)
    u = block @ _BT601[1] + _OFFSET[1]
    v = block @ _BT601[2] + _OFFSET[2]
    return tuple(np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, u, v))  # type: ignore[return-value]


def _rate(fps: float) -> Fraction:
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def write_y4m(path: str | Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> int:
    """Write ``frames`` ((H, W, 3) uint8 RGB, all the same size) as a 4:2:0 ``.y4m`` file.

    The header is ``YUV4MPEG2 W<w> H<h> F<num>:<den> Ip A1:1 C420jpeg``; each frame is
    ``FRAME\\n`` and the Y, U, V planes. Returns the number of frames written.
    """
    rate = _rate(fps)
    count, size = 0, None
    with open(path, "wb") as f:
        for frame in frames:
            h, w = frame.shape[:2]
            if size is None:
                size = (w, h)
                header = (
                    f"YUV4MPEG2 W{w} H{h} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg"
                )
                f.write(header.encode("ascii") + b"\n")
            elif size != (w, h):
                raise ValueError(f"frame {count} is {w}x{h}, the video is {size[0]}x{size[1]}")
            f.write(b"FRAME\n")
            for plane in rgb_to_i420(frame):
                f.write(plane.tobytes())
            count += 1
    if count == 0:
        raise ValueError("no frames to write")
    return count


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> int:
    """Write ``frames`` ((H, W, 3) uint8 RGB) with OpenCV: ``.mp4`` (MPEG-4 part 2) or ``.avi``
    (Motion JPEG), chosen by the suffix. Returns the number of frames written."""
    path = Path(path)
    fourcc = FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"unsupported video suffix {path.suffix!r}; use one of {sorted(FOURCC)}")
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for frame in frames:
            h, w = frame.shape[:2]
            if writer is None:
                code = cv2.VideoWriter.fourcc(*fourcc)
                writer = cv2.VideoWriter(str(path), code, float(_rate(fps)), (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {path} ({fourcc})")
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise ValueError("no frames to write")
    return count
