"""Image intake: uploaded bytes -> an oriented ``(h, w, 3)`` uint8 RGB array, or a 4xx.

Order of checks, cheapest first, so nothing is decoded that would be refused anyway:

1. the part's declared content type (415 unless an image type or unspecified),
2. empty (400), not an image at all (400), an image of another format (415: JPEG, PNG, WebP
   and BMP are accepted),
3. the declared size from the header, before any pixel is decoded (413 over the pixel limit:
   decompression bombs never get decoded),
4. a JPEG too short for the pixels it declares (400; the rule is in
   :func:`app.intake.jpeg_header.check_jpeg_holds`) or whose scans do not end in an end-of-image
   marker (400, :func:`app.intake.jpeg_header.jpeg_complete`), a PNG chunk's CRC, a WebP whose RIFF
   length is not the file's (400),
5. a full decode (truncated or corrupt data: 400; ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never
   set), EXIF orientation applied, then greyscale / palette / alpha / 16-bit -> RGB uint8.
   A JPEG longer than ``max_side`` is decoded at reduced scale (1/2, 1/4 or 1/8 per axis,
   :mod:`app.intake.reduction`); the result records the factor and the original size. (``/predict``
   may decode JPEGs on its device instead, after checks 1-4: :mod:`app.intake.torch_decode`.)

Person boxes (the ``boxes`` form field) are parsed and checked in :mod:`app.intake.boxes`.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from app.errors import ApiError
from app.intake.image_size import declared_size
from app.intake.jpeg_header import check_jpeg_holds, jpeg_complete, jpeg_size
from app.intake.reduction import PoseNeed, Reduction, decode_factor, reduced_size

if TYPE_CHECKING:
    from models.pose.crops import Pixels

log = logging.getLogger("heatpose.app")

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
ACCEPTED_CONTENT_TYPES = {
    "image/jpeg",
    "image/jpg",
    "image/pjpeg",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/x-bmp",
    "image/x-ms-bmp",
    "application/octet-stream",  # what many clients send when they do not know
    "",
}
_ORIENTATION = 0x0112  # EXIF tag: 1 = as stored, 2-8 = mirror and/or rotate
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, IndexError)


@dataclass(frozen=True)
class DecodedImage:
    """One decoded upload.

    Attributes:
        pixels: ``(h, w, 3)`` uint8 RGB, EXIF orientation applied (the image as displayed), at
            1/``reduction.factor`` of the original's size per axis: numpy, or a torch tensor on
            the serving device where ``/predict`` decodes JPEGs there
            (:mod:`app.intake.torch_decode`;
            :attr:`host` is the explicit host copy).
        filename: the client's file name ("" when none was given).
        format: the container format (JPEG, PNG, WEBP or BMP).
        reduction: how ``pixels`` relate to the original image (``None``: decoded at full size).
    """

    pixels: Pixels
    filename: str
    format: str
    reduction: Reduction | None = None

    @property
    def host(self) -> np.ndarray:
        """:attr:`pixels` as numpy (a tensor is copied to the host; an array is itself)."""
        from models.pose.crops import (
            host_pixels,  # here: models.pose.crops imports torch, intake does not
        )

        return host_pixels(self.pixels)

    @property
    def scale(self) -> Reduction:
        """The map between ``pixels`` and the original image (factor 1 at full size)."""
        return self.reduction or Reduction.none(self.pixels)

    @property
    def width(self) -> int:
        """Width in pixels of the oriented original image."""
        return self.scale.size[0]

    @property
    def height(self) -> int:
        """Height in pixels of the oriented original image."""
        return self.scale.size[1]


def check_content_type(content_type: str | None, filename: str) -> None:
    """415 unless the multipart part's content type is an accepted image type (or unspecified)."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct not in ACCEPTED_CONTENT_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"file {filename!r} has content type {ct!r}; send JPEG, PNG, WebP or BMP "
            "(image/jpeg, image/png, image/webp, image/bmp)",
        )


def pixels_to_decode(data: bytes, max_side: int = 0, need: PoseNeed | None = None) -> int:
    """How many pixels :func:`decode_image` will decode, from the image header (nothing
    decoded): ``width * height``, reduced as a JPEG is under ``max_side`` and ``need``
    (:func:`app.intake.reduction.decode_factor`); 0 when unreadable (the full check,
    :func:`decode_image`, then refuses the file)."""
    stored = jpeg_size(data)
    if stored is not None:
        size, fmt = stored, "JPEG"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(data)) as img:
                    size, fmt = img.size, (img.format or "").upper()
            except Exception:  # any unreadable header: decode_image says what is wrong
                return 0
    if min(size) <= 0:
        return 0
    w, h = reduced_size(size, decode_factor(size, max_side, need)) if fmt == "JPEG" else size
    return w * h


def decode_image(
    data: bytes, filename: str, max_pixels: int, *, max_side: int = 0, need: PoseNeed | None = None
) -> DecodedImage:
    """Decode and validate one upload (see the module docstring for the order of checks).

    Args:
        data: the uploaded bytes.
        filename: for messages and the response.
        max_pixels: the largest ``width * height`` accepted, read from the header.
        max_side: a JPEG whose longer side exceeds it is decoded at reduced scale
            (:func:`app.intake.reduction.jpeg_reduction`); 0 = always at full size.
        need: what the image's pose crops need when no detector will see it; a JPEG is then
            decoded as small as its crops allow (:meth:`app.intake.reduction.PoseNeed.factor`).

    Returns:
        The oriented RGB image, and its reduction when it was decoded at reduced scale.

    Raises:
        ApiError: 400 (empty, not an image, truncated, corrupt), 413 (too many pixels),
            415 (another image format).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = open_checked(data, filename, max_pixels)
        fmt, (w, h) = (img.format or "").upper(), img.size
        factor = _draft(img, decode_factor((w, h), max_side, need)) if fmt == "JPEG" else 1
        try:
            img.load()  # full decode; a truncated file raises (LOAD_TRUNCATED_IMAGES is False)
        except _DECODE_ERRORS as e:
            raise ApiError(
                400, "corrupt_image", f"file {filename!r} is truncated or corrupt: {e}"
            ) from e
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone flipped the global; refuse to trust the decode
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated uploads may pass")
    oriented, transposed = _orient(img, filename)
    pixels = to_rgb_uint8(oriented)
    if factor == 1:
        return DecodedImage(pixels=pixels, filename=filename, format=fmt)
    size = (h, w) if transposed else (w, h)
    return DecodedImage(pixels, filename, fmt, Reduction(factor, size))


def open_checked(data: bytes, filename: str, max_pixels: int) -> Image.Image:
    """Checks 2-4 of the module docstring on the header (no pixel decoded): the opened image,
    lazy (its ``format``, ``size``, ``mode`` and EXIF are read, its pixels are not).

    Raises:
        ApiError: 400 (empty, not an image, a PNG chunk's CRC, a JPEG too short for its
            size), 413 (over ``max_pixels``), 415 (another image format).
    """
    if not data:
        raise ApiError(400, "empty_file", f"file {filename!r} is empty (0 bytes)")
    # Pillow's own bomb guard warns above Image.MAX_IMAGE_PIXELS and raises above twice that;
    # our limit is checked explicitly below, the process-wide Pillow setting is left alone.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise _too_many_pixels(filename, declared_size(data), max_pixels) from e
        except UnidentifiedImageError as e:
            raise ApiError(
                400, "invalid_image", f"file {filename!r} is not an image Pillow can read"
            ) from e
        except _DECODE_ERRORS as e:
            raise ApiError(400, "invalid_image", f"{filename!r}: unreadable header: {e}") from e
    fmt = (img.format or "").upper()
    if fmt not in ACCEPTED_FORMATS:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"file {filename!r} is {fmt or 'an unknown format'}; JPEG, PNG, WebP and BMP "
            "are accepted",
        )
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ApiError(400, "invalid_image", f"file {filename!r} declares a {w}x{h} image")
    if w * h > max_pixels:
        raise _too_many_pixels(filename, (w, h), max_pixels)
    if fmt == "PNG":
        _verify_png(data, filename)
    if fmt == "WEBP":
        _verify_riff(data, filename)
    if fmt == "JPEG":
        check_jpeg_holds(data, (w, h), filename)
        if not jpeg_complete(data):  # libjpeg stops at a stray marker in damaged data, silently
            raise ApiError(
                400,
                "corrupt_image",
                f"file {filename!r} is a truncated or corrupt JPEG: its scans do not end in an "
                "end-of-image marker",
            )
    return img


def _draft(img: Image.Image, factor: int) -> int:
    """Configure a JPEG to decode at 1/``factor`` (:func:`~app.intake.reduction.decode_factor`)
    before its pixels are read; returns the factor granted (1 when Pillow declines)."""
    w, h = img.size
    if factor == 1:
        return 1
    granted = img.draft(img.mode, (max(1, w // factor), max(1, h // factor)))
    if granted is None:
        return 1
    return round(w / granted[1][2])


def _too_many_pixels(filename: str, size: tuple[int, int] | None, max_pixels: int) -> ApiError:
    declared = (
        f"declares {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
        if size
        else (
            f"declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (Pillow's own limit)"
        )
    )
    return ApiError(
        413,
        "image_too_large",
        f"file {filename!r} {declared}; the limit is {max_pixels:,} pixels "
        "(refused before decoding)",
    )


def _verify_png(data: bytes, filename: str) -> None:
    """Check every PNG chunk's CRC (Pillow's ``verify``), catching corrupt data early."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
    except _DECODE_ERRORS as e:
        raise ApiError(400, "corrupt_image", f"file {filename!r} is a corrupt PNG: {e}") from e


def _verify_riff(data: bytes, filename: str) -> None:
    """A WebP's RIFF header declares the file's length: a file cut short or with data appended
    (which libwebp decodes without a word) is refused. (A lossy WebP's compressed data has no
    checksum: damage inside it that keeps every length is not detectable.)"""
    declared = int.from_bytes(data[4:8], "little") + 8
    if len(data) not in (declared, declared + (declared & 1)):
        raise ApiError(
            400,
            "corrupt_image",
            f"file {filename!r} is a corrupt WebP: its RIFF header declares {declared:,} "
            f"bytes, the file has {len(data):,}",
        )


def exif_orientation(img: Image.Image, filename: str) -> int:
    """The EXIF orientation tag from the header (1 = as stored, 2-8 = mirror and/or rotate;
    1 when absent, unknown or unreadable: a malformed EXIF block is ignored, not fatal)."""
    try:
        tag = img.getexif().get(_ORIENTATION, 1)
    except Exception as e:  # malformed EXIF comes in many exception types
        log.warning("ignoring unreadable EXIF orientation of %r: %s", filename, e)
        return 1
    return tag if tag in range(1, 9) else 1


def _orient(img: Image.Image, filename: str) -> tuple[Image.Image, bool]:
    """Apply the EXIF orientation tag (:func:`exif_orientation`).

    Returns the image as displayed and whether its axes were swapped (tags 5-8).
    An image without a rotating tag (most uploads) is returned as decoded: ``exif_transpose``
    would copy all its pixels (a quarter of the decode's CPU, benchmarks/bench_overhead.py).
    """
    tag = exif_orientation(img, filename)
    if tag == 1:
        return img, False
    try:
        return ImageOps.exif_transpose(img), tag in (5, 6, 7, 8)
    except Exception as e:  # malformed EXIF comes in many exception types
        log.warning("ignoring unreadable EXIF orientation of %r: %s", filename, e)
        return img, False


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> ``(h, w, 3)`` uint8 RGB.

    Greyscale and palette images are expanded, alpha is composited over black (the colour
    the crop warp pads with), 16-bit and 32-bit integer greyscale is scaled to 0..255.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        grey = np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if (mode == "P" and "transparency" in img.info) or mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        rgba = np.asarray(img).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0
        return np.ascontiguousarray(np.rint(rgba[..., :3] * alpha).astype(np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
