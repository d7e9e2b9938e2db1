"""The on-device request path (app/intake/device_path.py): HEATPOSE_CROP=device +
HEATPOSE_DECODE=torch answers /predict as the cv2/Pillow path does, with the same errors. On the CPU
here (torchvision decodes JPEGs on the CPU, grid_sample cuts the crops there); the same code on CUDA
is tested by the ``gpu`` tests at the end."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import app.intake.torch_decode as td
from app.engine import batch_worker
from app.intake.device_path import crops_on_device, decodes_with_torch
from app.settings import Settings
from models.pose import geometry
from models.pose.crops import Crops
from tests.app.engine.test_detection import StandIn
from tests.helpers.images import encode_with_exif

pytestmark = pytest.mark.anyio

PX = 0.05
"""Stated tolerance, image px: the two paths' crops differ by at most one grey level in a few
pixels (grid_sample in float32 vs cv2's fixed point); measured max 0.007 px on these images."""
SCORE = 0.01


def photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))


def encoded(a: np.ndarray | Image.Image, fmt: str = "JPEG", tag: int | None = None) -> bytes:
    quality = {"quality": 92} if fmt == "JPEG" else {}
    return encode_with_exif(a, fmt, orientation=tag, **quality)


# One request: client boxes, whole images, EXIF-rotated JPEGs, a greyscale JPEG, a PNG and a
# CMYK JPEG (both on Pillow), several images at once.
UPLOADS = [
    ("boxes.jpg", encoded(photo(240, 320, 1)), [[10, 5, 150, 230], [150, 5, 310, 235]]),
    ("rot6.jpg", encoded(photo(180, 260, 2), tag=6), None),
    ("img.png", encoded(photo(200, 150, 3), "PNG"), None),
    ("rot3.jpg", encoded(photo(160, 200, 4), tag=3), [[20, 10, 120, 150]]),
    ("grey.jpg", encoded(Image.fromarray(photo(150, 120, 5)).convert("L")), None),
    ("cmyk.jpg", encoded(Image.fromarray(photo(140, 100, 6)).convert("CMYK")), None),
]


async def predict(client, uploads=UPLOADS, **params) -> dict:
    files = [("files", (name, data, "image/png")) for name, data, _ in uploads]
    form = {"boxes": json.dumps([b for *_, b in uploads])}
    r = await client.post("/predict", files=files, data=form, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def persons(answer: dict) -> list[tuple]:
    """Per person ``(image size, box, box source, keypoints (K, 2), scores (K,))``."""
    return [
        (
            (im["width"], im["height"]),
            p["bbox"],
            p["bbox_source"],
            np.array([[k["x"], k["y"]] for k in p["keypoints"]]),
            np.array([k["score"] for k in p["keypoints"]]),
        )
        for im in answer["images"]
        for p in im["persons"]
    ]


def assert_same_persons(got: dict, want: dict) -> None:
    a, b = persons(got), persons(want)
    assert len(a) == len(b) > 0
    for (size, box, source, xy, sc), (size2, box2, source2, xy2, sc2) in zip(a, b, strict=True):
        assert size == size2 and source == source2
        np.testing.assert_allclose(box, box2, atol=1e-4)
        np.testing.assert_allclose(xy, xy2, atol=PX, rtol=0)
        np.testing.assert_allclose(sc, sc2, atol=SCORE, rtol=0)


def spy(monkeypatch) -> dict[str, list]:
    """Record the device path's two calls: torchvision's JPEG decode (files per call, device
    type) and the batched crop (persons per call, device type)."""
    seen: dict[str, list] = {"decode": [], "crop": []}
    decode, crop = td.decode_jpeg, geometry.crop_persons_batched

    def decode_spy(xs, **kw):
        seen["decode"].append((len(xs), torch.device(kw["device"]).type))
        return decode(xs, **kw)

    def crop_spy(images, index, *args, **kw):
        seen["crop"].append((len(index), images[0].device.type))
        return crop(images, index, *args, **kw)

    monkeypatch.setattr(td, "decode_jpeg", decode_spy)
    monkeypatch.setattr(geometry, "crop_persons_batched", crop_spy)
    return seen


def test_auto_settings_resolve_by_the_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda:1")
    assert not crops_on_device("auto", cpu) and crops_on_device("auto", cuda)
    assert crops_on_device("device", cpu) and not crops_on_device("cv2", cuda)
    s = Settings(_env_file=None)
    assert (s.crop, s.decode) == ("auto", "auto")
    assert not decodes_with_torch(s, cpu) and decodes_with_torch(s, cuda)
    assert not decodes_with_torch(Settings(_env_file=None, crop="cv2"), cuda)
    assert decodes_with_torch(Settings(_env_file=None, decode="torch"), cpu)
    assert not decodes_with_torch(Settings(_env_file=None, decode="pillow"), cuda)
    assert not decodes_with_torch(Settings(_env_file=None, crop="device"), cpu)  # CPU: Pillow


@pytest.mark.slow
async def test_device_path_answers_as_the_cpu_path(serve_app, monkeypatch) -> None:
    # Full-size Pillow decodes for the reference: reduced-scale decoding changes the pixels
    # on purpose (tests/app/intake/test_reduction.py); the torch path always decodes at full size.
    async with serve_app(decode_max_side=0) as (client, _):
        want = await predict(client)
    async with serve_app(crop="device", decode="torch", decode_max_side=0) as (client, _):
        seen = spy(monkeypatch)  # after start-up: the self-check's own calls are not counted
        got = await predict(client)
    assert seen["decode"] == [(4, "cpu")]  # the four RGB/grey JPEGs in one call
    assert seen["crop"] == [(7, "cpu")]  # all persons of the request in one warp
    sizes = [(320, 240), (180, 260), (150, 200), (200, 160), (120, 150), (100, 140)]
    assert [(im["width"], im["height"]) for im in got["images"]] == sizes
    assert_same_persons(got, want)
    # Pillow's decode with the batched crop: the crops alone.
    async with serve_app(crop="device", decode="pillow", decode_max_side=0) as (client, _):
        assert_same_persons(await predict(client), want)


@pytest.mark.slow
async def test_detected_images_stay_on_the_device_path(serve_app, monkeypatch) -> None:
    """Images without boxes go to the detector as tensors; the same persons come back."""
    a = [("big.jpg", encoded(photo(480, 640, 7)), None)]
    async with serve_app(stand_in=StandIn(), decode_max_side=0) as (client, _):
        want = await predict(client, a)
    det = StandIn()
    async with serve_app(stand_in=det, crop="device", decode="torch") as (client, _):
        seen: list[type] = []
        detect = det.detect
        det.detect = lambda images, *x, **k: (
            seen.extend(map(type, images)) or detect(images, *x, **k)
        )
        got = await predict(client, a)
    assert seen == [torch.Tensor]
    assert [p[2] for p in persons(got)] == ["detector"] * 3
    assert_same_persons(got, want)


@pytest.mark.slow
async def test_visualize_stays_on_pillow_and_draws_the_same(serve_app, monkeypatch) -> None:
    """/visualize draws on CPU pixels: Pillow decodes its JPEG whatever HEATPOSE_DECODE says;
    its crops follow HEATPOSE_CROP (device here) and the picture is the cv2 path's."""
    name, data, box = UPLOADS[0]
    files = [("file", (name, data, "image/jpeg"))]
    form = {"boxes": json.dumps([box])}
    pngs = []
    for settings in ({"decode_max_side": 0}, {"crop": "device", "decode": "torch"}):
        async with serve_app(**settings) as (client, _):
            seen = spy(monkeypatch)
            r = await client.post("/visualize", files=files, data=form, params={"mode": "both"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        pngs.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int))
    assert seen["decode"] == [] and seen["crop"] == [(2, "cpu")]
    assert pngs[0].shape == pngs[1].shape == (240, 320, 3)
    # The same persons drawn (keypoints within PX): a few anti-aliased edge pixels may differ
    # (measured: none).
    assert (np.abs(pngs[0] - pngs[1]) > 8).mean() < 0.002


@pytest.mark.slow
async def test_the_pixel_budget_charges_full_size_decodes(serve_app) -> None:
    """A 2000x1600 JPEG is 3.2 MP decoded by torchvision (always full size), 0.2 MP by Pillow
    under HEATPOSE_DECODE_MAX_SIDE=500: the budget charges what each path decodes."""
    files = [("files", ("a.jpg", encoded(photo(1600, 2000, 14)), "image/jpeg"))]
    limits = {"max_request_pixels": 1_000_000, "decode_max_side": 500}
    async with serve_app(**limits) as (client, _):
        assert (await client.post("/predict", files=files)).status_code == 200
    async with serve_app(crop="device", decode="torch", **limits) as (client, app):
        r = await client.post("/predict", files=files)
        assert r.status_code == 413 and "3,200,000 pixels" in r.text
        assert app.state.pixel_budget.in_use == 0


ERRORS = [
    ("empty.jpg", b""),
    ("text.jpg", b"not an image at all"),
    ("cut.jpg", encoded(photo(240, 320, 8))[:3000]),
    ("gif.jpg", encoded(photo(20, 20, 9), "GIF")),
    ("big.jpg", encoded(photo(300, 400, 10))),  # over the pixel limit below
]


@pytest.mark.slow
@pytest.mark.parametrize("name,data", ERRORS, ids=[n for n, _ in ERRORS])
async def test_errors_are_unchanged(serve_app, monkeypatch, name: str, data: bytes) -> None:
    files = [("files", ("ok.jpg", encoded(photo(60, 80, 11)), "image/jpeg"))]
    files.append(("files", (name, data, "image/jpeg")))
    answers = []
    for settings in ({}, {"crop": "device", "decode": "torch"}):
        async with serve_app(max_image_pixels=100_000, **settings) as (client, _):
            seen = spy(monkeypatch)
            r = await client.post("/predict", files=files)
            answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1]
    assert 400 <= answers[0][0] < 500 and set(answers[0][1]) == {"error"}
    if name in ("big.jpg", "gif.jpg"):
        assert seen["decode"] == []  # refused on the header, before any decoding
    if name == "cut.jpg":  # its scans do not end: Pillow says why, torchvision never sees it
        assert seen["decode"] == []  # (nvJPEG might decode it without an error)


@pytest.mark.slow
def test_batch_worker_takes_tensor_crops(reference) -> None:
    """A batch of tensor crops (as the device path leaves them) gives what the same crops as a
    numpy array give: keypoints, scores and heatmaps equal."""
    images = [photo(240, 320, 12), photo(200, 150, 13)]
    boxes = [[[10, 5, 150, 230], [150, 5, 310, 235]], None]
    batch = Crops.concat(reference.crop_many(images, boxes, on_device=True))
    assert isinstance(batch.images, torch.Tensor)
    outs = [
        batch_worker.run(
            reference.heatmaps,
            reference.decode,
            crops=crops,
            flip=np.array([True, False, True]),
            centers=batch.centers,
            scales=batch.scales,
            modes=["dark", "dark", "argmax"],
            want_heatmaps=[True, False, False],
        )
        for crops in (batch.images, batch.images.numpy())
    ]
    a, b = outs
    np.testing.assert_array_equal(np.stack(a.keypoints), np.stack(b.keypoints))
    np.testing.assert_array_equal(np.stack(a.scores), np.stack(b.scores))
    assert a.heatmaps[0] is not None and a.heatmaps[1] is None
    np.testing.assert_array_equal(a.heatmaps[0], b.heatmaps[0])


def marked(h: int, w: int, seed: int, centre: tuple[float, float]) -> np.ndarray:
    """A photo with a magenta disc (radius 18 px) at ``centre`` (x, y), what
    :class:`tests.app.intake.test_reduction.MarkerModel` finds."""
    import cv2

    a = np.ascontiguousarray(photo(h, w, seed))
    c = (round(centre[0] * 16), round(centre[1] * 16))
    cv2.circle(a, c, 18 * 16, (255, 0, 255), -1, cv2.LINE_AA, shift=4)
    return a


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_cuda_auto_settings_decode_and_crop_on_the_device(serve_app, monkeypatch) -> None:
    """On CUDA the defaults decode the JPEGs with nvJPEG and crop there, and answer as the
    cv2/Pillow path on the same GPU. The forward call is the marker stand-in (behind the
    backend interface, as in tests/app/intake/test_reduction.py) so that the answer depends on the
    image, not on near-ties of random weights: each keypoint is where its person's marker is.
    Stated tolerance: 1 image px between the paths (nvJPEG's pixels differ from libjpeg's by
    about one grey level), 3 px from the drawn marker."""
    from tests.app.intake.test_reduction import MarkerModel

    shown = marked(260, 180, 20, (90.3, 120.7))  # displayed portrait; stored rotated (EXIF 6)
    uploads = [
        ("a.jpg", encoded(marked(240, 320, 21, (80.4, 100.2))), [[10, 5, 150, 230]]),
        ("r.jpg", encoded(np.ascontiguousarray(np.rot90(shown, 1)), tag=6), None),
        ("p.png", encoded(marked(200, 150, 22, (70.0, 90.0)), "PNG"), None),
    ]
    truth = np.array([[80.4, 100.2], [90.3, 120.7], [70.0, 90.0]])
    answers = []
    for settings in ({"crop": "cv2", "decode": "pillow", "decode_max_side": 0}, {}):
        async with serve_app(device="cuda", **settings) as (client, app):
            seen = spy(monkeypatch)
            service = app.state.service
            service.predictor.forward = MarkerModel(service.predictor)
            answers.append(await predict(client, uploads, flip_test="false"))
    assert seen["decode"] == [(2, "cuda")] and seen["crop"] == [(3, "cuda")]
    xy = [np.array([p[3] for p in persons(a)]) for a in answers]  # (3 persons, K, 2)
    assert np.ptp(xy[1], axis=1).max() < 1e-3  # all K keypoints at the marker
    assert np.abs(xy[1] - xy[0]).max() <= 1.0
    assert np.abs(xy[1][:, 0] - truth).max() <= 3.0
