"""JPEG headers read without decoding: the start-of-frame marker, whether a file can hold the
pixels it declares (a cheap check before any decoder sees it, :mod:`app.intake.uploads`), and
whether its image data ends (:func:`jpeg_complete`, before a lenient decoder sees it)."""

from __future__ import annotations

from collections.abc import Callable

from app.errors import ApiError

_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
"""Start-of-frame markers of Huffman-coded JPEGs (baseline, extended, progressive, lossless)."""


def _segment_at(data: bytes, wanted: Callable[[int], bool]) -> int | None:
    """Where the first header segment of a JPEG whose marker is ``wanted`` begins (walking the
    segments by their lengths, so an EXIF thumbnail inside APP1 is skipped), or ``None``."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        if wanted(data[i + 1]):
            return i
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _sof_at(data: bytes) -> int | None:
    """Where the start-of-frame segment of a JPEG begins, or ``None``."""
    return _segment_at(data, lambda m: 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC))


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's image data ends: an end-of-image marker (``FF D9``) after its first
    start-of-scan. Entropy-coded data cannot contain ``FF D9`` (an ``FF`` there is followed by
    ``00`` or a restart marker), so a file cut anywhere in its scans has none; bytes after the
    marker (camera trailers, a second picture) are allowed. Pillow refuses a JPEG without it
    ("image file is truncated"); a decoder that might not (nvJPEG) is given only files that pass,
    and the others go to Pillow, so both paths answer alike (:mod:`app.intake.torch_decode`). A file
    whose segments cannot be walked counts as not complete (Pillow reads it)."""
    at = _segment_at(data, lambda m: m == 0xDA)  # the first start-of-scan
    if at is None:
        return False
    scan = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")  # past its header
    return data.find(b"\xff\xd9", scan) != -1


def _jpeg_sof(data: bytes) -> int | None:
    """The start-of-frame marker of a JPEG, or ``None``."""
    at = _sof_at(data)
    return None if at is None else data[at + 1]


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """A JPEG's ``(width, height)`` as stored (before EXIF orientation), read from its
    start-of-frame segment, or ``None`` when there is none to read (then ask Pillow). About
    twenty times cheaper than ``PIL.Image.open``, which parses every header segment in Python:
    it runs on the event loop for every upload (:func:`app.intake.uploads.pixels_to_decode`)."""
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
