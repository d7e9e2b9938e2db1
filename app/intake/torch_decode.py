"""JPEG uploads decoded by torchvision on the serving device (nvJPEG on CUDA), batched.

The device half of ``/predict``'s intake (``HEATPOSE_DECODE``, :mod:`app.intake.device_path`). Each
upload first passes the same header checks as the Pillow path
(:func:`app.intake.uploads.open_checked`: format, the pixel limit, a JPEG too short for its size;
nothing is decoded before them), then:

- JPEGs whose colour is RGB or greyscale go, all of the request together, to ONE
  ``torchvision.io.decode_jpeg(list, device=...)`` call (on CUDA, nvJPEG's batched decoder);
  each comes back ``(3, H, W)`` uint8 on the device. Their EXIF orientation is read from the
  header by Pillow (no pixel decoded) and applied to the tensor (:func:`orient`). They are
  decoded at full size: the crop's warp does the zoom (reduced-scale decoding,
  :mod:`app.intake.reduction`, is the Pillow path's).
- Everything else stays on the Pillow path (:func:`app.intake.uploads.decode_image`): other formats,
  CMYK JPEGs, JPEGs whose image data does not end (:func:`app.intake.jpeg_header.jpeg_complete`:
  nvJPEG may decode a truncated file without an error, Pillow answers 400), and any JPEG
  torchvision refuses (the batch is then decoded one by one, and a
  file refused alone goes to Pillow, which decodes it or answers the usual 400).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from app.intake.jpeg_header import jpeg_complete
from app.intake.reduction import PoseNeed
from app.intake.uploads import DecodedImage, decode_image, exif_orientation, open_checked

log = logging.getLogger("heatpose.app")

JPEG_MAGIC = b"\xff\xd8\xff"
TORCH_MODES = ("RGB", "L")
"""Pillow modes of the JPEGs decoded here (colour and greyscale); CMYK etc. go to Pillow."""


def orient(image: torch.Tensor, tag: int) -> torch.Tensor:
    """A ``(C, H, W)`` image as stored -> as displayed under EXIF orientation ``tag`` (1-8),
    as ``PIL.ImageOps.exif_transpose`` does (tags 5-8 swap the axes)."""
    if tag == 2:
        return image.flip(-1)
    if tag == 3:
        return image.flip(-1, -2)
    if tag == 4:
        return image.flip(-2)
    if tag == 5:
        return image.transpose(-1, -2)
    if tag == 6:
        return torch.rot90(image, -1, (-2, -1))  # 90 degrees clockwise
    if tag == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if tag == 8:
        return torch.rot90(image, 1, (-2, -1))  # 90 degrees counter-clockwise
    return image


def decode_jpegs(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG files -> ``(3, H, W)`` uint8 RGB tensors on ``device``, one batched call; on an
    error, one call per file and ``None`` for each file torchvision refuses."""
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError) as e:  # one bad file fails the whole batched call
        if len(tensors) == 1:
            return [None]
        log.debug("batched JPEG decode failed (%s); decoding one by one", e)
    out: list[torch.Tensor | None] = []
    for t in tensors:
        try:
            out.append(decode_jpeg([t], mode=ImageReadMode.RGB, device=device)[0])
        except (RuntimeError, ValueError):
            out.append(None)
    return out


def decode_uploads(
    datas: Sequence[bytes],
    names: Sequence[str],
    *,
    max_pixels: int,
    max_side: int,
    needs: Sequence[PoseNeed | None],
    device: torch.device,
) -> list[DecodedImage]:
    """One request's uploads, JPEGs on ``device`` (see the module docstring).

    Args:
        datas, names: the uploaded bytes and their file names.
        max_pixels: the largest ``width * height`` accepted (checked on the header first).
        max_side, needs: for the files that stay on Pillow
        (:func:`app.intake.uploads.decode_image`). device: where JPEGs are decoded and stay.

    Returns:
        Per upload its :class:`~app.intake.uploads.DecodedImage`: ``pixels`` a ``(H, W, 3)`` uint8
        tensor on ``device`` for a JPEG decoded here (full size, as displayed), else numpy.

    Raises:
        ApiError: as :func:`app.intake.uploads.decode_image` (header errors of all files before the
            errors found while decoding the JPEGs decoded here).
    """
    out: list[DecodedImage | None] = [None] * len(datas)
    here: list[tuple[int, int]] = []  # (upload, EXIF orientation) of the JPEGs decoded here
    for i, (data, name, need) in enumerate(zip(datas, names, needs, strict=True)):
        img = open_checked(data, name, max_pixels) if data[:3] == JPEG_MAGIC else None
        if (
            img is not None
            and img.format == "JPEG"
            and img.mode in TORCH_MODES
            and jpeg_complete(data)  # nvJPEG may decode a truncated file without an error
        ):
            here.append((i, exif_orientation(img, name)))
        else:  # every check again there, but the header is the only part read twice
            out[i] = decode_image(data, name, max_pixels, max_side=max_side, need=need)
    decoded = decode_jpegs([datas[i] for i, _ in here], device) if here else []
    for (i, tag), t in zip(here, decoded, strict=True):
        if t is None:  # torchvision refused it: Pillow decodes it or says what is wrong
            out[i] = decode_image(datas[i], names[i], max_pixels, max_side=max_side, need=needs[i])
        else:
            out[i] = DecodedImage(orient(t, tag).permute(1, 2, 0), names[i], "JPEG")
    return [d for d in out if d is not None]
