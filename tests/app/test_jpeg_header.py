"""JPEG headers read without Pillow: the stored size equals what Pillow reads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.jpeg_header import jpeg_size


def _jpeg(size: tuple[int, int], **save: object) -> bytes:
    w, h = size
    pixels = np.random.default_rng(w * 7 + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **save)
    return buf.getvalue()


def _with_exif(size: tuple[int, int]) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; the stored size is what counts here
    exif[0x010E] = "x" * 3000  # a long APP1 segment before the frame header
    return _jpeg(size, exif=exif.tobytes())


@pytest.mark.parametrize(
    "data",
    [
        _jpeg((640, 480)),
        _jpeg((1, 1)),
        _jpeg((333, 4097), progressive=True),
        _jpeg((64, 48), quality=20, subsampling=2),
        _with_exif((300, 200)),
    ],
)
def test_jpeg_size_equals_pillows(data: bytes) -> None:
    assert jpeg_size(data) == Image.open(io.BytesIO(data)).size


def test_greyscale_and_non_jpegs() -> None:
    buf = io.BytesIO()
    Image.new("L", (77, 55), 128).save(buf, "JPEG")
    assert jpeg_size(buf.getvalue()) == (77, 55)
    png = io.BytesIO()
    Image.new("RGB", (10, 10)).save(png, "PNG")
    assert jpeg_size(png.getvalue()) is None
    head = _jpeg((640, 480))
    assert jpeg_size(head[:20]) is None  # cut before the frame header: ask Pillow
    assert jpeg_size(b"") is None
