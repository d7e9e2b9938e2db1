"""JPEG headers read without decoding: the start-of-frame marker, and whether a file can hold
the pixels it declares (a cheap check before any decoder sees it, :mod:`app.intake`)."""

from __future__ import annotations

from app.errors import ApiError

_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
"""Start-of-frame markers of Huffman-coded JPEGs (baseline, extended, progressive, lossless)."""


def _sof_at(data: bytes) -> int | None:
    """Where the start-of-frame segment of a JPEG begins (walking the header segments), or
    ``None``."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return i
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _jpeg_sof(data: bytes) -> int | None:
    """The start-of-frame marker of a JPEG, or ``None``."""
    at = _sof_at(data)
    return None if at is None else data[at + 1]


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """A JPEG's ``(width, height)`` as stored (before EXIF orientation), read from its
    start-of-frame segment, or ``None`` when there is none to read (then ask Pillow). About
    twenty times cheaper than ``PIL.Image.open``, which parses every header segment in Python:
    it runs on the event loop for every upload (:func:`app.intake.pixels_to_decode`)."""
    at = _sof_at(data)
    if at is None or at + 9 > len(data):
        return None
    height = int.from_bytes(data[at + 5 : at + 7], "big")
    width = int.from_bytes(data[at + 7 : at + 9], "big")
    return width, height


def check_jpeg_holds(data: bytes, size: tuple[int, int], filename: str) -> None:
    """400 when a Huffman-coded JPEG is too short for the pixels its header declares.

    The rule: every 8x8 block of the first component is coded in the first scan with at least
    one Huffman code, and a Huffman code is at least one bit, so the file has at least
    ``ceil(w/8) * ceil(h/8) / 8`` bytes. libjpeg fills what is missing with grey without an
    error (a 27 KB file patched to say 6000x6000 would otherwise decode to 108 MB of filler).
    Arithmetic-coded JPEGs (which can spend less than a bit per block) are not checked.
    """
    if _jpeg_sof(data) not in _HUFFMAN_SOF:
        return
    w, h = size
    need = ((w + 7) // 8) * ((h + 7) // 8) // 8
    if len(data) < need:
        raise ApiError(
            400,
            "corrupt_image",
            f"file {filename!r} declares {w}x{h} pixels but its {len(data):,} bytes cannot hold "
            f"them (a JPEG needs at least one bit per 8x8 block: {need:,} bytes); the file is "
            "truncated or its header is wrong",
        )
