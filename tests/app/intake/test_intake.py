"""Image intake and the boxes field: every kind of upload and what it becomes."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from app.errors import ApiError
from app.http.errors import http_error
from app.intake.boxes import parse_boxes_field
from app.intake.reduction import Reduction
from app.intake.uploads import check_content_type, decode_image, pixels_to_decode
from models.pose.persons import BoxError, validate_boxes
from tests.helpers import images
from tests.helpers.images import bomb_png, encode, noise


def rgb(h: int = 40, w: int = 30, seed: int = 0) -> np.ndarray:
    return noise(h, w, seed)


def code_of(data: bytes, max_pixels: int = 10_000_000) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as e:
        decode_image(data, "x", max_pixels)
    return e.value.status, e.value.code, e.value.message


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    a = rgb()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(a, fmt, **kw), "a", 10**6)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (40, 30, 3)
    assert out.format == fmt
    np.testing.assert_array_equal(out.pixels, a)


def test_jpeg_decodes_to_rgb() -> None:
    a = np.full((16, 24, 3), (200, 30, 60), np.uint8)
    out = decode_image(encode(a, "JPEG", quality=95), "a.jpg", 10**6)
    assert out.pixels.shape == (16, 24, 3)
    assert np.abs(out.pixels.astype(int) - a).max() < 8  # colour order stays RGB


def test_exif_orientation_is_applied() -> None:
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = 255  # white band on the left of the stored pixels
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95), "r.jpg", 10**6)
    assert (out.width, out.height) == (20, 40)
    # rotating 90 degrees clockwise puts the stored left band at the top
    assert out.pixels[:10].mean() > 200 and out.pixels[-10:].mean() < 50


@pytest.mark.parametrize("tag", [None, 1, 2, 3, 8])
def test_every_orientation_tag_matches_pillows_transpose(tag: int | None) -> None:
    # Untagged and "as stored" (1) images skip exif_transpose's copy; 2-8 still go through it.
    img = Image.fromarray(rgb(20, 40, seed=3))
    exif = img.getexif()
    if tag is not None:
        exif[0x0112] = tag
    data = encode(img, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = decode_image(data, "o.png", 10**6).pixels
    np.testing.assert_array_equal(out, expected)
    assert (out.shape[:2] == (20, 40)) == (tag in (None, 1, 2, 3))


def test_greyscale_palette_rgba_and_16bit_become_rgb_uint8() -> None:
    grey = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    out = decode_image(encode(grey, "PNG"), "g", 10**6).pixels
    assert out.shape == (5, 5, 3) and (out[..., 0] == grey).all() and (out[..., 2] == grey).all()

    pal = Image.fromarray(rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out = decode_image(encode(pal, "PNG"), "p", 10**6).pixels
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    out = decode_image(encode(rgba, "PNG"), "a", 10**6).pixels
    assert (out[:2] == 200).all() and (out[2:] == 0).all()

    deep = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0..65535
    out = decode_image(encode(Image.fromarray(deep), "PNG"), "d", 10**6).pixels
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[3, 3, 0] == 255
    assert out[1, 0, 0] == round(4 * 4369 * 255 / 65535)


def test_bad_bytes_give_4xx_with_reasons() -> None:
    assert code_of(b"")[:2] == (400, "empty_file")
    assert code_of(b"hello, this is text not an image")[:2] == (400, "invalid_image")
    gif = encode(rgb(), "GIF")
    status, code, msg = code_of(gif)
    assert (status, code) == (415, "unsupported_media_type") and "GIF" in msg
    tiff = encode(rgb(), "TIFF")
    assert code_of(tiff)[:2] == (415, "unsupported_media_type")


def test_truncated_jpeg_is_400_and_global_flag_untouched() -> None:
    data = encode(rgb(64, 64), "JPEG")
    status, code, msg = code_of(data[: len(data) // 2])
    assert (status, code) == (400, "corrupt_image") and "truncated" in msg
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def corrupt_png() -> bytes:
    """A PNG whose IDAT holds garbage with a correct CRC (only decoding can find it)."""
    return images.corrupt_png(rgb(32, 32))


def test_corrupt_png_is_400() -> None:
    status, code, _ = code_of(corrupt_png())
    assert (status, code) == (400, "corrupt_image")
    good = encode(rgb(32, 32), "PNG")
    i = good.index(b"IDAT") + 10
    flipped = good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :]  # CRC mismatch
    assert code_of(flipped)[:2] == (400, "corrupt_image")


def test_decompression_bomb_refused_from_the_header() -> None:
    status, code, msg = code_of(bomb_png(10_000, 10_000), max_pixels=40_000_000)
    assert (status, code) == (413, "image_too_large")
    assert "100,000,000" in msg and "before decoding" in msg
    # beyond Pillow's own hard limit too (its DecompressionBombError)
    assert code_of(bomb_png(30_000, 30_000), max_pixels=40_000_000)[:2] == (413, "image_too_large")


def test_content_type_check() -> None:
    for ok in ("image/jpeg", "image/png; charset=x", "application/octet-stream", None, ""):
        check_content_type(ok, "f")
    with pytest.raises(ApiError) as e:
        check_content_type("text/plain", "f.txt")
    assert e.value.status == 415 and "text/plain" in e.value.message


def test_boxes_parse_and_check() -> None:
    assert parse_boxes_field(None, 2, 10) == [None, None]
    raw = parse_boxes_field("[[[1, 2, 30, 40]], null, []]", 3, 10)
    assert raw[0] is not None and raw[1] is None and raw[2] == []
    b = validate_boxes(raw[0], 50, 50, label="boxes[0]")
    assert b.shape == (1, 4) and b.tolist() == [[1, 2, 30, 40]]
    e2 = validate_boxes(raw[2], 50, 50)
    assert e2.shape == (0, 4)
    # a box partly outside the image is fine
    partly = validate_boxes([[-10, -10, 5, 5]], 50, 50)
    assert partly.tolist() == [[-10, -10, 5, 5]]


@pytest.mark.parametrize(
    ("text", "n", "needle"),
    [
        ("[[[1, 2, 3", 1, "not valid JSON"),
        ('{"a": 1}', 1, "JSON list"),
        ("[[[1, 2, 3, 4]]]", 2, "1 entries but 2 file(s)"),
        ("[5]", 1, "list of [x1, y1, x2, y2] boxes or null"),
        ("[" + "[" + ",".join(["[0, 0, 1, 1]"] * 11) + "]]", 1, "at most"),
    ],
)
def test_boxes_structure_errors(text: str, n: int, needle: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_boxes_field(text, n, 10)
    assert e.value.status == 422 and e.value.code == "invalid_boxes"
    assert needle in e.value.message


@pytest.mark.parametrize(
    ("box", "needle"),
    [
        ([1, 2, 3], "4 numbers"),
        ([1, "a", 3, 4], "numbers only"),
        ([1, True, 3, 4], "numbers only"),
        ([float("nan"), 0, 10, 10], "NaN or infinity"),
        ([0, 0, float("inf"), 10], "NaN or infinity"),
        ([5, 5, 5, 20], "zero or negative area"),
        ([10, 10, 5, 20], "zero or negative area"),
        ([60, 60, 90, 90], "wholly outside"),
        ([-30, 0, -1, 10], "wholly outside"),
        ([10**400, 0, 1, 1], "too large"),
    ],
)
def test_box_value_errors(box: list[float], needle: str) -> None:
    with pytest.raises(BoxError) as e:
        validate_boxes([box], 50, 50, label="boxes[0]")
    assert needle in str(e.value) and str(e.value).startswith("boxes[0][0]")
    err = http_error(e.value)  # what the client gets
    assert err.status == 422 and err.code == "invalid_boxes" and needle in err.message


def test_nan_literal_in_json_is_caught() -> None:
    raw = parse_boxes_field("[[[NaN, 0, 10, 10]]]", 1, 10)
    with pytest.raises(BoxError, match="NaN"):
        validate_boxes(raw[0], 50, 50)


def test_jpeg_whose_header_claims_more_pixels_than_its_data_holds_is_400() -> None:
    data = bytearray(encode(rgb(200, 300, seed=3), "JPEG", quality=90))  # ~55 KB of noise
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 6000, 6000)  # height, width
    with pytest.raises(ApiError) as e:
        decode_image(bytes(data), "patched.jpg", 40_000_000)
    assert e.value.status == 400 and e.value.code == "corrupt_image"
    assert "6000x6000" in e.value.message and "8x8 block" in e.value.message
    # the rule's floor (1 bit per 8x8 block) is below what real encoders write for the most
    # compressible content: flat grey, optimised, progressive, lowest quality, still decodes
    flat = encode(Image.new("L", (2000, 1500), 128), "JPEG", progressive=True, optimize=True)
    assert len(flat) > (250 * 188) // 8
    assert decode_image(flat, "flat.jpg", 40_000_000).pixels.shape == (1500, 2000, 3)


def smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // w, y * 255 // h, 128 + 100 * np.sin(x / 37.0)], axis=-1)
    return a.astype(np.uint8)


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    data = encode(smooth(600, 1000), "JPEG", quality=95)
    out = decode_image(data, "big.jpg", 10**7, max_side=200)  # 1/4 keeps 250 >= 200
    assert out.pixels.shape == (150, 250, 3)
    assert out.reduction == Reduction(4, (1000, 600)) and (out.width, out.height) == (1000, 600)
    # each decoded pixel is the mean of a 4x4 block of the full decode
    full = decode_image(data, "big.jpg", 10**7).pixels
    assert full.shape == (600, 1000, 3)
    means = full.reshape(150, 4, 250, 4, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(out.pixels - means).mean() < 1.5
    assert pixels_to_decode(data, 200) == 250 * 150 and pixels_to_decode(data) == 600_000
    for side in (0, 1000, 501):  # off; no longer than the setting; 1/2 would fall below it
        kept = decode_image(data, "big.jpg", 10**7, max_side=side)
        assert kept.pixels.shape == (600, 1000, 3) and kept.reduction is None
    png = decode_image(encode(smooth(600, 1000), "PNG"), "big.png", 10**7, max_side=200)
    assert png.pixels.shape == (600, 1000, 3)  # only JPEGs have a reduced decode
    assert pixels_to_decode(encode(smooth(60, 100), "PNG"), 20) == 6000


def test_reduced_decode_of_a_rotated_jpeg_reports_the_displayed_size() -> None:
    img = Image.fromarray(smooth(600, 1000))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": shown 600 wide, 1000 high
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()), "r.jpg", 10**7, max_side=200)
    assert out.pixels.shape == (250, 150, 3)
    assert out.reduction == Reduction(4, (600, 1000)) and (out.width, out.height) == (600, 1000)


@pytest.mark.parametrize("size,max_side", [((1001, 37), 100), ((2000, 3), 100), ((999, 997), 300)])
def test_the_budgeted_pixels_are_the_decoded_pixels(size: tuple[int, int], max_side: int) -> None:
    data = encode(rgb(size[1], size[0]), "JPEG", quality=80)
    out = decode_image(data, "odd.jpg", 10**7, max_side=max_side)
    assert out.pixels.shape[0] * out.pixels.shape[1] == pixels_to_decode(data, max_side)
    assert out.reduction is not None and out.pixels.shape[1] < size[0]  # really reduced
