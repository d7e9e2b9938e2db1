"""Video writers: y4m parses back (header, frames, planes as OpenCV converts), mp4/avi read back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.video.video_files import write_video, write_y4m


def _frames(n: int, w: int = 64, h: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB frames whose 2x2 blocks are flat (so chroma subsampling is exact)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(3, 4, 3)).astype(np.uint8)
        half = cv2.resize(small, (w // 2, h // 2), interpolation=cv2.INTER_CUBIC)
        out.append(half.repeat(2, axis=0).repeat(2, axis=1))
    return out


def _parse_y4m(data: bytes) -> tuple[dict[str, str], list[bytes]]:
    header, _, body = data.partition(b"\n")
    magic, *fields = header.decode("ascii").split(" ")
    assert magic == "YUV4MPEG2"
    tags = {f[0]: f[1:] for f in fields}
    size = int(tags["W"]) * int(tags["H"]) * 3 // 2
    frames = []
    while body:
        marker, _, body = body.partition(b"\n")
        assert marker == b"FRAME"
        frames.append(body[:size])
        assert len(frames[-1]) == size
        body = body[size:]
    return tags, frames


def test_y4m_parses_back_with_planes_as_opencv_converts(tmp_path: Path) -> None:
    frames = _frames(5)
    path = tmp_path / "clip.y4m"
    assert write_y4m(path, frames, fps=30000 / 1001) == 5
    tags, raw = _parse_y4m(path.read_bytes())
    assert (tags["W"], tags["H"], tags["F"], tags["I"], tags["C"]) == (
        "64",
        "48",
        "30000:1001",
        "p",
        "420jpeg",
    )
    assert len(raw) == 5
    for frame, data in zip(frames, raw, strict=True):
        ref = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).reshape(-1)  # BT.601, limited range
        got = np.frombuffer(data, np.uint8)
        assert np.abs(got.astype(int) - ref).max() <= 1
        assert got[: 64 * 48].min() >= 16 and got[: 64 * 48].max() <= 235  # limited-range luma


def test_y4m_rejects_odd_sizes_mixed_sizes_and_no_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_y4m(tmp_path / "a.y4m", [np.zeros((47, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="frame 1"):
        write_y4m(tmp_path / "b.y4m", [*_frames(1), *_frames(1, w=32)])
    with pytest.raises(ValueError, match="no frames"):
        write_y4m(tmp_path / "c.y4m", [])


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_file_reads_back_in_opencv(tmp_path: Path, suffix: str) -> None:
    frames = _frames(6, w=96, h=64)
    path = tmp_path / f"clip{suffix}"
    assert write_video(path, frames, fps=25.0) == 6
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    back = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        back.append(bgr[..., ::-1])
    cap.release()
    assert len(back) == 6
    for a, b in zip(frames, back, strict=True):
        assert b.shape == a.shape
        assert np.abs(a.astype(int) - b).mean() < 8  # lossy codecs, but the same picture (RGB)


def test_video_file_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "clip.mkv", _frames(1))
