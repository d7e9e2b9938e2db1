"""Encoded test images: the bytes a client would upload, made from pixels the test chose."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """``image`` (an ``(H, W, 3)`` uint8 RGB array, or a Pillow image) encoded by Pillow as
    ``fmt`` (``"PNG"``, ``"JPEG"``, ``"WEBP"``, ...) with Pillow's save ``options``
    (e.g. ``quality=90``, ``compress_level=0``)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def encode_with_exif(
    image: np.ndarray | Image.Image,
    fmt: str = "JPEG",
    *,
    orientation: int | None = None,
    **options: object,
) -> bytes:
    """:func:`encode` with ``image``'s EXIF block written into the file (an array's is empty),
    its orientation tag (0x0112, 1-8; e.g. 6: display rotated 90 degrees clockwise) set to
    ``orientation`` when given."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    exif = img.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    return encode(img, fmt, exif=exif.tobytes(), **options)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB uniform noise, the same for the same ``seed`` (noise does not
    compress: a PNG of it is about ``3 * h * w`` bytes)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def corrupt_png(image: np.ndarray) -> bytes:
    """A PNG of ``image``'s size whose IDAT chunk holds garbage with a correct CRC: the file's
    structure is sound and only decoding the pixels can find the fault."""
    good = encode(image)
    i = good.index(b"IDAT")
    length = struct.unpack(">I", good[i - 4 : i])[0]
    junk = (bytes(range(256)) * (length // 256 + 1))[:length]
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + junk) & 0xFFFFFFFF)
    return good[: i + 4] + junk + crc + good[i + 8 + length :]


def bomb_png(w: int, h: int) -> bytes:
    """A tiny PNG file that declares ``w`` x ``h`` grey pixels (its data would inflate to
    ``w * h`` bytes; only its first 64 rows are there: decoding would fail later anyway)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * w
    idat = zlib.compress(row * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
