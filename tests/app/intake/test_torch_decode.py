"""app/intake/torch_decode.py: JPEGs decoded by torchvision (here on the CPU; nvJPEG on CUDA) equal
Pillow's decode, oriented as Pillow orients them; what torchvision cannot decode goes to Pillow;
the header checks (and their errors) come first."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import app.intake.torch_decode as td
from app.errors import ApiError
from app.intake.torch_decode import decode_jpegs, decode_uploads, orient
from app.intake.uploads import decode_image
from tests.helpers.images import encode_with_exif

CPU = torch.device("cpu")


def photo(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth ``(h, w, 3)`` uint8 image (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3)).astype(np.float32)
    img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img)


def jpeg(a: np.ndarray | Image.Image, *, tag: int | None = None, **kw: object) -> bytes:
    return encode_with_exif(a, "JPEG", orientation=tag, quality=92, **kw)


def decode(datas: list[bytes], max_pixels: int = 10**7, device: torch.device = CPU) -> list:
    return decode_uploads(
        datas,
        [f"f{i}" for i in range(len(datas))],
        max_pixels=max_pixels,
        max_side=0,
        needs=[None] * len(datas),
        device=device,
    )


@pytest.mark.parametrize("tag", range(1, 9))
def test_orient_is_pillows_exif_transpose(tag: int) -> None:
    a = photo(30, 50)
    stored = Image.fromarray(a)
    exif = stored.getexif()
    exif[0x0112] = tag
    stored.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(stored))
    got = orient(torch.from_numpy(a.copy()).permute(2, 0, 1), tag).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("tag", [None, 1, 3, 6, 8])
def test_decoded_jpegs_equal_pillows_as_displayed(tag: int | None) -> None:
    data = jpeg(photo(60, 80, seed=1), tag=tag)
    (got,) = decode([data])
    want = decode_image(data, "f0", 10**7)
    assert isinstance(got.pixels, torch.Tensor) and got.pixels.dtype == torch.uint8
    assert (got.width, got.height) == (want.width, want.height) and got.reduction is None
    # libjpeg-turbo both: the same pixels
    np.testing.assert_array_equal(got.host, want.pixels)


def test_one_batched_call_for_the_jpegs_other_formats_on_pillow(monkeypatch) -> None:
    calls: list[int] = []
    real = td.decode_jpeg
    monkeypatch.setattr(td, "decode_jpeg", lambda xs, **kw: calls.append(len(xs)) or real(xs, **kw))
    png = io.BytesIO()
    Image.fromarray(photo(seed=3)).save(png, "PNG")
    grey = jpeg(Image.fromarray(photo(seed=4)).convert("L"))
    cmyk = jpeg(Image.fromarray(photo(seed=5)).convert("CMYK"))
    datas = [jpeg(photo(seed=2)), png.getvalue(), grey, cmyk, jpeg(photo(seed=6), tag=6)]
    out = decode(datas)
    assert calls == [3]  # the RGB, greyscale and rotated JPEGs, together
    kinds = [type(d.pixels) for d in out]
    assert kinds == [torch.Tensor, np.ndarray, torch.Tensor, np.ndarray, torch.Tensor]
    for d, data in zip(out, datas, strict=True):
        np.testing.assert_array_equal(d.host, decode_image(data, "x", 10**7).pixels)


def test_a_jpeg_torchvision_refuses_gets_pillows_answer() -> None:
    good = jpeg(photo(seed=7))
    cut = good[: len(good) * 2 // 3]  # passes the header checks, truncated data
    with pytest.raises(ApiError) as pillow:
        decode_image(cut, "f1", 10**7)
    with pytest.raises(ApiError) as here:
        decode([good, cut])
    assert (here.value.status, here.value.code, here.value.message) == (
        pillow.value.status,
        pillow.value.code,
        pillow.value.message,
    )
    assert here.value.status == 400 and here.value.code == "corrupt_image"
    # The batch falls back to one call per file: a good file still decodes.
    a, b = decode_jpegs([good, cut], CPU)
    assert b is None and a is not None
    np.testing.assert_array_equal(a.permute(1, 2, 0).numpy(), decode_image(good, "g", 10**7).pixels)
    assert decode_jpegs([cut], CPU) == [None]


def test_a_truncated_jpeg_gets_pillows_answer_even_from_a_lenient_decoder(monkeypatch) -> None:
    """nvJPEG's answer to a truncated file was never seen (no GPU here); whatever it does, such a
    file must get the CPU path's 400. A stand-in decoder that decodes anything without an
    error: the truncated file never reaches it."""
    seen: list[int] = []

    def lenient(tensors, **kw):
        seen.extend(len(t) for t in tensors)
        return [torch.full((3, 60, 80), 128, dtype=torch.uint8) for _ in tensors]

    monkeypatch.setattr(td, "decode_jpeg", lenient)
    good = jpeg(photo(seed=8))
    for cut in (good[: len(good) * 2 // 3], good[:-2]):  # cut in the scan; only EOI missing
        with pytest.raises(ApiError) as pillow:
            decode_image(cut, "f1", 10**7)
        seen.clear()
        with pytest.raises(ApiError) as here:
            decode([good, cut])
        assert len(cut) not in seen  # the cut file never reached the device decoder
        assert (here.value.status, here.value.code, here.value.message) == (
            pillow.value.status,
            pillow.value.code,
            pillow.value.message,
        )
        assert here.value.status == 400 and "truncated" in here.value.message
    seen.clear()
    (whole,) = decode([good])
    assert seen == [len(good)] and whole.pixels.shape == (60, 80, 3)  # the stand-in's


def test_the_pixel_limit_is_checked_before_any_decoding(monkeypatch) -> None:
    monkeypatch.setattr(td, "decode_jpeg", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ApiError) as e:
        decode([jpeg(photo(60, 80))], max_pixels=60 * 80 - 1)
    assert e.value.status == 413 and e.value.code == "image_too_large"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_decode_is_close_to_pillows() -> None:
    """nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's: stated bound, mean absolute
    difference under 1.5 grey levels, on photos with EXIF rotation."""
    datas = [jpeg(photo(240, 320, seed=s), tag=t) for s, t in ((0, None), (1, 6), (2, 3))]
    out = decode(datas, device=torch.device("cuda"))
    for d, data in zip(out, datas, strict=True):
        assert isinstance(d.pixels, torch.Tensor) and d.pixels.is_cuda
        want = decode_image(data, "x", 10**7).pixels.astype(int)
        diff = np.abs(d.host.astype(int) - want)
        assert d.host.shape == want.shape and diff.mean() < 1.5, diff.mean()
