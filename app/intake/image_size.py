"""The size an image file declares, read from its header without Pillow (PNG, BMP, WebP).

Pillow refuses to open an image that declares more than twice ``Image.MAX_IMAGE_PIXELS``
(``DecompressionBombError``) before it tells its size; the 413 for such an upload still names
the declared dimensions (:func:`declared_size`). JPEG sizes are read by
:mod:`app.intake.jpeg_header`.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG, BMP or WebP header; ``None`` for other or short data."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data.startswith(b"BM") and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sizes
            w, h = struct.unpack("<HH", data[18:22])
            return w, h
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)  # a negative height is a top-down bitmap
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas, 24-bit fields holding size - 1
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14 bits each, size - 1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
