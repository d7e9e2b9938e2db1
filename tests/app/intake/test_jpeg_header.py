"""JPEG headers read without Pillow: the stored size equals what Pillow reads, and a file's
image data ends exactly when Pillow decodes it without "truncated"."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.intake.jpeg_header import jpeg_complete, jpeg_size
from tests.helpers.images import encode, noise


def _jpeg(size: tuple[int, int], **save: object) -> bytes:
    w, h = size
    return encode(noise(h, w, seed=w * 7 + h), "JPEG", **save)


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
    assert jpeg_size(encode(Image.new("L", (77, 55), 128), "JPEG")) == (77, 55)
    assert jpeg_size(encode(Image.new("RGB", (10, 10)))) is None
    head = _jpeg((640, 480))
    assert jpeg_size(head[:20]) is None  # cut before the frame header: ask Pillow
    assert jpeg_size(b"") is None


def _pillow_decodes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
    except OSError:
        return False
    return True


def _with_thumbnail(data: bytes) -> bytes:
    """``data`` with an APP1 segment holding a whole small JPEG (as an EXIF thumbnail does): an
    end-of-image marker before the real image's scans."""
    thumb = _jpeg((16, 8))
    payload = b"Exif\x00\x00" + thumb
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment + data[2:]


def _cases() -> list[tuple[str, bytes]]:
    out = []
    for label, full in [
        ("baseline", _jpeg((96, 64))),
        ("progressive", _jpeg((96, 64), progressive=True)),
        ("thumbnail", _with_thumbnail(_jpeg((96, 64)))),
    ]:
        out.append((f"{label} whole", full))
        out.append((f"{label} without EOI", full[:-2]))
        out.append((f"{label} with a trailer", full + b"trailer bytes \xff\x00"))
        out += [(f"{label} cut at {k}/8", full[: len(full) * k // 8]) for k in range(3, 8)]
    second = _jpeg((32, 32))
    out.append(("two pictures, the second cut", _jpeg((96, 64)) + second[: len(second) // 2]))
    return out


@pytest.mark.parametrize(("label", "data"), _cases(), ids=[c[0] for c in _cases()])
def test_jpeg_complete_agrees_with_pillow(label: str, data: bytes) -> None:
    assert jpeg_complete(data) == _pillow_decodes(data), label


def test_jpeg_complete_skips_an_end_marker_in_the_header() -> None:
    full = _with_thumbnail(_jpeg((96, 64)))
    cut = full[: len(full) * 3 // 4]
    assert b"\xff\xd9" in cut  # the thumbnail's: a plain search would call the cut file whole
    assert not jpeg_complete(cut) and jpeg_complete(full)
    assert not jpeg_complete(b"") and not jpeg_complete(b"\xff\xd8\xff")
