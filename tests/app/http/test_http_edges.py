"""Issue 23 §5: damaged images of every accepted format get 400, a bomb's 413 names its size
and the limit, HEAD probes of /health and /ready, and the JSON envelope for unknown paths and
methods (no empty 307 for a trailing slash)."""

from __future__ import annotations

import socket
import struct
import zlib
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from app.errors import ApiError
from app.intake.image_size import declared_size
from app.intake.uploads import decode_image
from tests.helpers import images


def picture() -> np.ndarray:
    """Gradients and noise, 160x120: every format's compressed data is spread over the file."""
    a = (np.indices((120, 160)).sum(0) % 256).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    return np.stack([a, a[::-1], noise], -1)


def encode(fmt: str, **options: Any) -> bytes:
    return images.encode(picture(), fmt, **options)


FORMATS = {
    "jpeg": ("JPEG", {}),
    "png": ("PNG", {}),
    "webp-lossy": ("WEBP", {"quality": 80}),
    "webp-lossless": ("WEBP", {"lossless": True}),
    "bmp": ("BMP", {}),
}


def refused(data: bytes) -> ApiError:
    with pytest.raises(ApiError) as e:
        decode_image(data, "x", 10**8)
    return e.value


@pytest.mark.parametrize("name", list(FORMATS))
def test_truncated_images_of_every_format_get_400(name: str) -> None:
    fmt, options = FORMATS[name]
    data = encode(fmt, **options)
    assert decode_image(data, "x", 10**8).pixels.shape == (120, 160, 3)  # the intact file
    for fraction in (0.05, 0.3, 0.6, 0.9, 0.99):
        e = refused(data[: int(len(data) * fraction)])
        assert e.status == 400 and e.code in ("corrupt_image", "invalid_image"), (fraction, e)


@pytest.mark.parametrize("name", ["jpeg", "png"])
def test_a_damaged_tail_is_refused_where_the_format_can_tell(name: str) -> None:
    """Zeros or noise over the last 70%, the length kept: PNG's CRCs and JPEG's missing
    end-of-image marker see it. (WebP and BMP pixel data carry no check: damage that keeps every
    length decodes, in libwebp as in any decoder; truncation and wrong lengths are refused.)"""
    fmt, options = FORMATS[name]
    data = encode(fmt, **options)
    cut = int(len(data) * 0.3)
    noise = np.random.default_rng(1).integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
    for tail in (bytes(len(data) - cut), noise):
        assert refused(data[:cut] + tail).status == 400


@pytest.mark.parametrize("name", ["webp-lossy", "webp-lossless"])
def test_a_webp_whose_riff_length_is_not_the_file_is_corrupt(name: str) -> None:
    """libwebp decodes a WebP with bytes appended, or whose RIFF header claims less, silently."""
    fmt, options = FORMATS[name]
    data = encode(fmt, **options)
    e = refused(data + b"\x17" * 500)
    assert e.status == 400 and e.code == "corrupt_image"
    assert f"declares {len(data):,} bytes, the file has {len(data) + 500:,}" in e.message
    longer = bytearray(data)
    struct.pack_into("<I", longer, 4, len(data) - 8 + 64)
    assert refused(bytes(longer)).status == 400


def bomb(fmt: str, w: int, h: int) -> bytes:
    """A header declaring ``w`` x ``h`` pixels (the data does not matter: it is never read)."""
    if fmt == "PNG":

        def chunk(kind: bytes, payload: bytes) -> bytes:
            crc = struct.pack(">I", zlib.crc32(kind + payload))
            return struct.pack(">I", len(payload)) + kind + payload + crc

        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        idat = zlib.compress(bytes(64))
        body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body
    if fmt == "BMP":
        header = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + header + bytes(64)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + bytes(64)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_a_bomb_beyond_pillows_own_limit_is_413_naming_its_size_and_the_limit(fmt: str) -> None:
    data = bomb(fmt, 30000, 30000)
    assert declared_size(data) == (30000, 30000)
    e = refused(data)
    assert e.status == 413 and e.code == "image_too_large"
    assert "30000x30000 = 900,000,000 pixels" in e.message, e.message
    assert "the limit is 100,000,000 pixels" in e.message


def test_declared_size_reads_real_files() -> None:
    for name, (fmt, options) in FORMATS.items():
        data = encode(fmt, **options)
        expected = None if fmt == "JPEG" else (160, 120)  # JPEG: app.intake.jpeg_header
        assert declared_size(data) == expected, name


def test_head_probes_answer_as_get(client: Any) -> None:
    c = client()
    for path in ("/health", "/ready"):
        get, head = c.get(path), c.head(path)
        assert head.status_code == get.status_code == 200
        assert head.headers["content-type"] == get.headers["content-type"]
    c.app.state.service.begin_drain()
    get, head = c.get("/ready"), c.head("/ready")
    assert head.status_code == get.status_code == 503


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/nope", 404, "no route GET /nope"),
        ("POST", "/predict/", 404, "no route POST /predict/ (did you mean /predict?)"),
        ("GET", "/v1/model/", 404, "no route GET /v1/model/ (did you mean /v1/model?)"),
        ("GET", "/predict", 405, "GET /predict is not allowed; /predict answers POST"),
        ("DELETE", "/health", 405, "DELETE /health is not allowed; /health answers GET"),
        ("PUT", "/v1/model", 405, "PUT /v1/model is not allowed"),
    ],
)
def test_unknown_paths_and_methods_get_the_json_envelope(
    client: Any, method: str, path: str, status: int, says: str
) -> None:
    r = client().request(method, path, follow_redirects=False)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == {404: "not_found", 405: "method_not_allowed"}[status]
    assert error["message"].startswith(says), error["message"]


def raw(url: str, request: bytes) -> bytes:
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(request)  # with Connection: close the server closes after its answer
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.slow
def test_head_through_a_real_server_has_no_body(server_process) -> None:
    with server_process() as (_, url):
        for path in (b"/health", b"/ready"):
            get = raw(url, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = raw(url, b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            get_head, _, get_body = get.partition(b"\r\n\r\n")
            head_head, _, head_body = head.partition(b"\r\n\r\n")
            assert head_head.startswith(b"HTTP/1.1 200") and get_head.startswith(b"HTTP/1.1 200")
            assert get_body and head_body == b""
            assert f"content-length: {len(get_body)}".encode() in head_head.lower()
