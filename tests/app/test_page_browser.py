"""The demo page in a real browser: Debian's Chromium driven by Playwright against a live
``python -m app`` process (the tiny test checkpoint, an API key set).

Without a Chromium binary the module is skipped, except in CI (``CI=true``), where that is a
failure: ``.ci/run`` installs Chromium. ``HEATPOSE_SCREENSHOTS=DIR`` saves screenshots of the
page there (``docs/`` keeps the README's).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest
from fastapi import WebSocket

from models.video_files import write_y4m
from training.synthetic_video import make_video

ROOT = Path(__file__).resolve().parents[2]
KEY = "page-test-key-7"
MAX_UPLOAD = 1_000_000
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium() -> str | None:
    """The system Chromium (``HEATPOSE_CHROMIUM`` or the first on PATH), or None."""
    explicit = os.environ.get("HEATPOSE_CHROMIUM")
    if explicit:
        return explicit
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def require_browser() -> str:
    path = chromium()
    reason = None
    if path is None:
        reason = "no Chromium binary (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if reason is None:
        return str(path)
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}; .ci/run must install it")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def page_checkpoint(app_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with its final layer scaled down so keypoint scores (heatmap
    maxima, linear in that layer) fall inside the page's 0..1 slider range (they are 2-11)."""
    import torch

    from models.checkpoint import load, save

    bundle = load(app_checkpoint)
    with torch.no_grad():
        bundle.model.final_layer.weight.mul_(0.08)
    path = tmp_path_factory.mktemp("page") / "tiny-page.safetensors"
    save(path, bundle.model, bundle.config)
    return path


@pytest.fixture(scope="module")
def server(page_checkpoint: Path) -> Iterator[str]:
    """``python -m app`` on a free port with an API key; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    checkpoint = str(page_checkpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    # HEATPOSE_DETECTOR=none: no detector weights can be downloaded here (services without
    # person detection ignore the variable).
    env.update(
        HEATPOSE_CHECKPOINT=checkpoint,
        HEATPOSE_API_KEY=KEY,
        HEATPOSE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        HEATPOSE_DETECTOR="none",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, its fake camera playing two walking people."""
    path = require_browser()
    from playwright.sync_api import sync_playwright

    clip = tmp_path_factory.mktemp("camera") / "clip.y4m"
    write_y4m(clip, make_video("crossing", fps=10.0).frames[:30], fps=10.0)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=path,
            args=[
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}",
            ],
        )
        yield b
        b.close()


class Session:
    """A fresh page that records every request and every console error."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.context = browser.new_context(accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda w: self.requests.append(w.url))  # not a "request"
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def foreign_requests(self) -> list[str]:
        """Requests that left the service's origin (blob:/data: URLs stay in the browser)."""
        origin = urlsplit(self.base).netloc
        parts = [urlsplit(u) for u in self.requests]
        return [
            p.geturl() for p in parts if p.scheme not in ("blob", "data") and p.netloc != origin
        ]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(browser: Any, server: str) -> Iterator[Session]:
    s = Session(browser, server, viewport={"width": 900, "height": 1000})
    yield s
    s.close()


SAME = "(d, i, c) => [0, 1, 2].every((k) => Math.abs(d[i + k] - c[k]) < 3)"

COUNT_COLOUR = f"""([selector, rgb]) => {{
  const same = {SAME};
  const c = document.querySelector(selector);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (same(d, i, rgb)) n++;
  return n;
}}"""

NEAR = f"""([selector, x, y, rgb]) => {{
  const same = {SAME};
  const c = document.querySelector(selector);
  const d = c.getContext('2d').getImageData(x - 2, y - 2, 5, 5).data;
  for (let i = 0; i < d.length; i += 4) if (same(d, i, rgb)) return true;
  return false;
}}"""

DIGEST = """(selector) => {
  const c = document.querySelector(selector);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) % 1000000007;
  return h;
}"""


def rgb_of(css: str) -> list[int]:
    return [int(v) for v in css.removeprefix("rgb(").removesuffix(")").split(",")]


def set_slider(page: Any, selector: str, value: float) -> None:
    page.fill(selector, str(value))
    page.wait_for_function(
        "([s, v]) => Number(document.querySelector(s).value) === v", arg=[selector, value]
    )


def screenshot(page: Any, name: str) -> None:
    out = os.environ.get("HEATPOSE_SCREENSHOTS")
    if not out:
        return
    from PIL import Image

    raw = Image.open(io.BytesIO(page.screenshot(full_page=False)))
    raw.convert("RGB").quantize(colors=128).save(Path(out) / name, optimize=True)


def test_photo_mode_draws_and_lists_what_predict_returns(session: Session, tmp_path: Path) -> None:
    from training.synthetic_scene import people_scene

    scene, _ = people_scene(7, width=480, height=360, people=3)
    (tmp_path / "three.jpg").write_bytes(jpeg(scene))
    files = [ROOT / "docs" / "sample.jpg", tmp_path / "three.jpg"]
    page = session.page
    page.goto(session.base + "/")
    page.wait_for_selector("body[data-ready=true]")
    set_slider(page, "#kpt-thr", 0.0)
    page.set_input_files("#files", [str(f) for f in files])
    # The service has an API key: the page learns it from the 401 and asks for it.
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", KEY)
    page.click("#key-ok")
    page.wait_for_selector("#results[data-state=done]", timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('heatpose.apiKey')") == KEY

    # What /predict answers for the same files and the same query, asked here directly.
    predict_url = [u for u in session.requests if urlsplit(u).path == "/predict"][-1]
    upload = [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in files]
    expected = httpx.post(predict_url, files=upload, headers={"X-API-Key": KEY}, timeout=60)
    assert expected.status_code == 200
    answer = expected.json()
    assert len(answer["images"]) == 2

    cards = page.locator("#results article.result")
    assert cards.count() == 2
    for i, image in enumerate(answer["images"]):
        card = cards.nth(i)
        rows = card.locator("tr.person")
        assert rows.count() == len(image["persons"]) >= 1
        canvas = f"#results article.result:nth-of-type({i + 1}) canvas"
        size = page.evaluate(
            f"[document.querySelector('{canvas}').width, document.querySelector('{canvas}').height]"
        )
        assert size == [image["width"], image["height"]]
        for j, person in enumerate(image["persons"]):
            row = rows.nth(j)
            cells = row.locator("td").all_inner_texts()
            scores = cells[4:]
            assert scores == [f"{kp['score']:.2f}" for kp in person["keypoints"]]
            colour = rgb_of(row.locator("th").get_attribute("data-color"))
            # Each keypoint is a dot in the person's colour where the JSON puts it (dots may
            # overlap: a later dot's white rim can cross an earlier one's centre). A random
            # model puts some outside the image, where nothing can be drawn.
            w, h = image["width"] - 2, image["height"] - 2
            inside = [kp for kp in person["keypoints"] if 2 <= kp["x"] < w and 2 <= kp["y"] < h]
            hits = sum(
                page.evaluate(NEAR, [canvas, int(kp["x"]), int(kp["y"]), colour]) for kp in inside
            )
            assert len(inside) >= 5 and hits >= 0.9 * len(inside), (i, j, hits, len(inside))
        first = rgb_of(rows.nth(0).locator("th").get_attribute("data-color"))
        drawn = page.evaluate(COUNT_COLOUR, [canvas, first])
        assert drawn > 300
        # The keypoint slider redraws without asking the service again.
        n_requests = len(session.requests)
        set_slider(page, "#kpt-thr", 1.0)
        kps = image["persons"][0]["keypoints"]
        assert max(kp["score"] for kp in kps) < 1.0  # the scaled checkpoint's scores
        assert page.evaluate(COUNT_COLOUR, [canvas, first]) < 0.5 * drawn
        assert card.locator("tr.person").nth(0).locator("td.low").count() == len(kps)
        median = round(float(np.median([kp["score"] for kp in kps])) * 20) / 20
        set_slider(page, "#kpt-thr", median)
        low = sum(kp["score"] < median for kp in kps)
        assert card.locator("tr.person").nth(0).locator("td.low").count() == low
        between = page.evaluate(COUNT_COLOUR, [canvas, first])
        assert between < drawn or low == 0
        set_slider(page, "#kpt-thr", 0.0)
        assert page.evaluate(COUNT_COLOUR, [canvas, first]) == drawn
        assert len(session.requests) == n_requests
        # With detector boxes (bbox_score), the box slider hides the persons below it.
        scored = [p["bbox_score"] for p in image["persons"] if p.get("bbox_score") is not None]
        if scored:
            set_slider(page, "#bbox-thr", 1.0)
            hidden = card.locator("tr.hidden-person").count()
            assert hidden == sum(s < 1.0 for s in scored)
            set_slider(page, "#bbox-thr", 0.0)
    assert len(answer["images"][1]["persons"]) in (1, 3)  # whole image, or one per person
    assert "ms" in page.inner_text("#timing")
    screenshot(page, "page-photo.png")

    # The downloaded JSON is /predict's answer (the timing aside).
    with page.expect_download() as download:
        page.click("#download")
    got = json.loads(Path(download.value.path()).read_text())
    for doc in (got, answer):
        doc.pop("timing")
    assert got == answer

    # The heatmap layer comes from /visualize and changes the picture.
    canvas = "#results article.result:nth-of-type(1) canvas"
    before = page.evaluate(DIGEST, canvas)
    page.check("#heatmap")
    page.wait_for_selector("#results[data-layer=heatmap]", timeout=30_000)
    visualize = [u for u in session.requests if urlsplit(u).path == "/visualize"]
    assert len(visualize) == 2 and all("mode=heatmap" in u for u in visualize)
    assert page.evaluate(DIGEST, canvas) != before
    page.uncheck("#heatmap")
    page.wait_for_selector("#results[data-layer=image]")
    assert page.evaluate(DIGEST, canvas) == before

    # Phone-sized: nothing wider than the screen (the table scrolls inside its own box).
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.locator("#files").is_visible() and page.locator("#kpt-thr").is_visible()
    screenshot(page, "page-phone.png")

    assert not session.foreign_requests(), session.foreign_requests()
    # The one 401 that told the page to ask for the key is logged by the browser; nothing else.
    assert session.errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]


def test_errors_are_explained(session: Session, tmp_path: Path) -> None:
    page = session.page
    page.add_init_script(f"sessionStorage.setItem('heatpose.apiKey', '{KEY}')")
    page.goto(session.base + "/")
    page.wait_for_selector("body[data-ready=true]")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.set_input_files("#files", str(text))
    page.wait_for_selector("#results[data-state=error]", state="attached")
    assert "Not an image" in page.inner_text("#message")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(MAX_UPLOAD + 1000))
    page.set_input_files("#files", str(big))
    page.wait_for_function("document.querySelector('#message').innerText.includes('Too large')")
    # 503 (overloaded) and 401 read as people need them: when to retry, what is missing.
    said = page.evaluate(
        """import('/static/js/api.js').then((m) => [
             m.describeError(503, {error: {code: 'overloaded', message: 'queue full'}}, '7'),
             m.describeError(401, {error: {code: 'unauthorized', message: 'missing API key'}})])"""
    )
    assert "Try again in 7 s" in said[0] and "queue full" in said[0]
    assert "API key" in said[1]
    # Keyboard: Tab reaches the mode switch, Enter opens webcam mode.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "mode-webcam":
            break
    page.keyboard.press("Enter")
    assert page.locator("#webcam").is_visible() and not page.locator("#photo").is_visible()
    assert not session.foreign_requests()
    # The browser logs failed loads (the 415 and 413 answers) as console errors; nothing else.
    assert all("Failed to load resource" in e for e in session.errors), session.errors


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".opblock"), ("/redoc", "[role=menuitem]")])
def test_docs_render_offline(session: Session, path: str, ready: str) -> None:
    page = session.page
    page.goto(session.base + path)
    page.wait_for_selector(ready, timeout=30_000)
    assert "/predict" in page.inner_text("body")
    if path == "/docs":
        assert page.locator("button.authorize").count() >= 1
        assert page.locator(".opblock").count() >= 6
    assert not session.foreign_requests(), session.foreign_requests()
    assert not session.errors, session.errors


def test_webcam_mode_streams_and_draws_tracks(
    browser: Any, server: str, app_checkpoint: Path
) -> None:
    s = Session(browser, server, viewport={"width": 900, "height": 900})
    try:
        page = s.page
        page.add_init_script(f"sessionStorage.setItem('heatpose.apiKey', '{KEY}')")
        page.goto(server + "/#webcam")
        page.wait_for_selector("body[data-ready=true]")
        set_slider(page, "#kpt-thr", 0.0)
        page.select_option("#rate", "10")
        page.click("#cam-start")
        page.wait_for_function(
            "Number(document.querySelector('#cam-fps').textContent) > 0", timeout=30_000
        )
        tracks = page.inner_text("#cam-tracks")
        assert tracks not in ("–", "none", "")
        ids = [int(t) for t in tracks.split(",")]
        colours = page.evaluate(
            "ids => import('/static/js/draw.js').then(m => ids.map(i => m.colorOf(i)))", ids
        )
        assert any(page.evaluate(COUNT_COLOUR, ["#overlay", c]) > 50 for c in colours)
        assert page.inner_text("#cam-latency").endswith("ms")
        int(page.inner_text("#cam-dropped"))
        screenshot(page, "page-webcam.png")
        page.click("#cam-stop")
        ws = [u for u in s.requests if urlsplit(u).path == "/v1/stream"]
        assert all(u.startswith("ws://") for u in ws) and ws
        assert not s.foreign_requests(), s.foreign_requests()
        assert not s.errors, s.errors
    finally:
        s.close()


@pytest.fixture
def stream_stand_in() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A test double of ``WS /v1/stream`` (issue 10 §1) next to the real page files, in a thread.

    It wants the API key as ``api_key`` (else it closes with 1008, as the service will), answers
    each frame after 100 ms with two persons (track IDs 3 and 8) and logs what it received.
    """
    import asyncio
    import threading

    import uvicorn
    from fastapi import FastAPI

    from app.routes.page import install_page
    from models.keypoints import COCO_KEYPOINTS

    log: list[dict[str, Any]] = []
    app = FastAPI()
    install_page(app)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return {"keypoints": COCO_KEYPOINTS.to_dict()}

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        if ws.query_params.get("api_key") != KEY:
            await ws.close(code=1008)
            return
        meta: dict[str, Any] | None = None
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                meta = json.loads(message["text"])
                continue
            frame = cv2.imdecode(np.frombuffer(message["bytes"], np.uint8), cv2.IMREAD_COLOR)
            h, w = frame.shape[:2]
            log.append({"meta": meta, "size": (w, h), "received_ms": time.time() * 1e3})
            await asyncio.sleep(0.1)  # slower than the page's 30 frames/s
            persons = []
            for track_id, cx in ((3, 0.3), (8, 0.7)):
                kps = [
                    {
                        "name": n,
                        "x": cx * w + 8 * np.sin(k),
                        "y": (0.15 + 0.04 * k) * h,
                        "score": 0.9,
                        "visible": True,
                    }
                    for k, n in enumerate(COCO_KEYPOINTS.names)
                ]
                box = [cx * w - 30, 0.1 * h, cx * w + 30, 0.9 * h]
                persons.append(
                    {
                        "track_id": track_id,
                        "bbox": box,
                        "bbox_score": 0.9,
                        "score": 0.9,
                        "keypoints": kps,
                    }
                )
            answer = {
                "seq": (meta or {}).get("seq"),
                "ts_ms": (meta or {}).get("ts_ms"),
                "latency_ms": 100.0,
                "dropped": 1,
                "width": w,
                "height": h,
                "persons": persons,
            }
            log[-1]["answered_ms"] = time.time() * 1e3
            await ws.send_text(json.dumps(answer))
            meta = None

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", log
    server.should_exit = True
    thread.join(timeout=10)


def test_webcam_mode_speaks_the_stream_protocol(browser: Any, stream_stand_in: Any) -> None:
    """The page against a stand-in of the stream: the key after a 1008 close, one frame in
    flight at a time, a text header before each JPEG, track IDs drawn, the readouts."""
    base, log = stream_stand_in
    s = Session(browser, base, viewport={"width": 900, "height": 900})
    try:
        page = s.page
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready=true]")
        page.click("#mode-webcam")
        page.select_option("#rate", "30")
        page.click("#cam-start")
        page.wait_for_selector("#key-dialog[open]")  # the stream closed with 1008
        page.fill("#key-input", KEY)
        page.click("#key-ok")
        page.wait_for_function("Number(document.querySelector('#cam-fps').textContent) > 0")
        page.wait_for_function("Number(document.querySelector('#cam-dropped').textContent) >= 5")
        assert page.inner_text("#cam-tracks") == "3, 8"
        assert page.inner_text("#cam-latency") == "100 ms"
        colours = page.evaluate(
            "ids => import('/static/js/draw.js').then(m => ids.map(i => m.colorOf(i)))", [3, 8]
        )
        for colour in colours:
            assert page.evaluate(COUNT_COLOUR, ["#overlay", colour]) > 100, colour
        page.click("#cam-stop")
        frames = list(log)
        assert len(frames) >= 5
        assert all(f["size"] == (320, 240) for f in frames)  # the fake camera's clip
        seqs = [f["meta"]["seq"] for f in frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # a header before every frame
        # Never a new frame before the previous answer (30 frames/s asked, 10 answered).
        for prev, cur in itertools.pairwise(frames):
            assert cur["meta"]["ts_ms"] >= prev["answered_ms"] - 5, (prev, cur)
        assert float(page.inner_text("#cam-fps")) < 12
        assert not s.foreign_requests(), s.foreign_requests()
        assert not s.errors, s.errors
    finally:
        s.close()
