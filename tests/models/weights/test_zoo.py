"""Weight zoo: real downloads from a loopback HTTP server (Range, cuts), sha256 gate, cache."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
)

from heatpose_cli import weights as weights_cli
from models.detection.detector import ARCHS, PersonDetector, load_detector
from models.pose.network import PoseResNet
from models.weights import zoo
from models.weights.checkpoint import DETECTOR_KEY, CheckpointError, load, read_state_dict
from models.weights.zoo import ZooEntry, ZooError, fetch, resolve
from tests.models.detection.test_detector import SIZES, images, published_state


@dataclass
class _Files:
    """What the loopback server serves, and what it saw."""

    files: dict[str, bytes]
    requests: list[dict[str, str | None]] = field(default_factory=list)
    cut_next: int = 0  # this many upcoming responses stop halfway and drop the connection
    ignore_range: bool = False


def _handler(state: _Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
            data = state.files.get(self.path.rsplit("/", 1)[-1])
            if data is None:
                self.send_error(404)
                return
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(match.group(1)) if match and not state.ignore_range else 0
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_next > 0:
                state.cut_next -= 1
                self.wfile.write(body[: len(body) // 2])
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def published(module_tmp: Callable[[str], Path]) -> tuple[PoseResNet, bytes]:
    """A random ResNet-18 PoseResNet and its bytes as an mmpose 1.x ``.pth``."""
    torch.manual_seed(0)
    model = PoseResNet(18, 17).eval()
    with torch.no_grad():
        for p in model.final_layer.parameters():
            p.normal_(0, 0.1)
    state = {
        ("head." if k.startswith(("deconv", "final")) else "backbone.") + k: v
        for k, v in model.state_dict().items()
    }
    path = module_tmp("src") / "model.pth"
    meta = {"epoch": 210, "iter": np.int64(5), "hist": np.zeros(3)}
    torch.save({"meta": meta, "state_dict": state}, path)
    return model, path.read_bytes()


@pytest.fixture
def server(published: tuple[PoseResNet, bytes]) -> Iterator[tuple[str, _Files, dict]]:
    """(base URL, server state, zoo table with one entry for the served file)."""
    data = published[1]
    prefix = hashlib.sha256(data).hexdigest()[:8]
    filename = f"td-hm_res18_test-{prefix}_20240101.pth"
    state = _Files(files={filename: data})
    entry = ZooEntry(
        "tiny",
        filename,
        prefix,
        coco_val_ap=0.5,
        decode_mode="dark",
        base_url="http://127.0.0.1:9/unused",
    )
    with _serving(state) as url:
        yield f"{url}/mirror", state, {"tiny": entry}


@contextlib.contextmanager
def _serving(state: _Files) -> Iterator[str]:
    """A loopback HTTP server for ``state`` while the block runs; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _heatmaps(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, 64, 48))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_fetch_downloads_verifies_converts_and_caches(
    tmp_path: Path, server, published, monkeypatch, capsys
) -> None:
    url, state, entries = server
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", url)
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    path = fetch("tiny", entries=entries)
    assert path == tmp_path / "tiny.safetensors"
    assert _files(tmp_path) == ["tiny.safetensors"]  # no .part, no .pth left
    assert state.requests == [{"path": f"/mirror/{entries['tiny'].filename}", "range": None}]
    assert "100%" in capsys.readouterr().err  # the progress bar went to stderr
    bundle = load(path)
    assert torch.equal(_heatmaps(bundle.model), _heatmaps(published[0]))
    assert (bundle.config.name, bundle.config.decode_mode) == ("tiny", "dark")
    assert bundle.config.metrics == {"coco_val_ap": 0.5}
    assert bundle.config.provenance["sha256"] == hashlib.sha256(published[1]).hexdigest()
    assert bundle.config.provenance["url"].startswith(url)
    assert fetch("tiny", entries=entries) == path and len(state.requests) == 1  # cached
    assert resolve("tiny", entries=entries) == path and len(state.requests) == 1


def test_hash_mismatch_is_refused_and_nothing_cached(tmp_path: Path, server) -> None:
    url, _, entries = server
    real = entries["tiny"].sha256_prefix
    wrong = ZooEntry(**{**entries["tiny"].__dict__, "sha256_prefix": "0" * 8})
    assert real != wrong.sha256_prefix
    with pytest.raises(ZooError, match=r"sha256 .* starts with 00000000.*nothing was cached"):
        fetch("tiny", home=tmp_path, base_url=url, progress=False, entries={"tiny": wrong})
    assert _files(tmp_path) == []


def test_interrupted_download_resumes_with_range(tmp_path: Path, server, published) -> None:
    url, state, entries = server
    state.cut_next = 1
    path = fetch("tiny", home=tmp_path, base_url=url, progress=False, entries=entries)
    half = len(published[1]) // 2
    assert [r["range"] for r in state.requests] == [None, f"bytes={half}-"]
    assert torch.equal(_heatmaps(load(path).model), _heatmaps(published[0]))


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path: Path, server, published) -> None:
    url, state, entries = server
    part = tmp_path / "downloads" / f"{entries['tiny'].filename}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(published[1][:1000])
    fetch("tiny", home=tmp_path, base_url=url, progress=False, entries=entries)
    assert [r["range"] for r in state.requests] == ["bytes=1000-"]


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path, server, published) -> None:
    url, state, entries = server
    state.ignore_range = True
    part = tmp_path / "downloads" / f"{entries['tiny'].filename}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes that must not stay in front")
    path = fetch("tiny", home=tmp_path, base_url=url, progress=False, entries=entries)
    assert torch.equal(_heatmaps(load(path).model), _heatmaps(published[0]))


def test_unreachable_server_says_how_to_provide_a_checkpoint(tmp_path: Path, server) -> None:
    _, _, entries = server
    # the hint names no front door's setting: each caller prefixes its own (HEATPOSE_CHECKPOINT,
    # --checkpoint); tests/models/weights/test_offline_messages.py checks the commands it suggests
    with pytest.raises(ZooError, match=r"cannot download.*local .safetensors.*weights import"):
        fetch("tiny", home=tmp_path, base_url=_closed_port_url(), entries=entries)
    assert not (tmp_path / "tiny.safetensors").exists()


def test_resolve(tmp_path: Path, server, monkeypatch) -> None:
    _, _, entries = server
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", _closed_port_url())
    existing = tmp_path / "mine.safetensors"
    existing.write_bytes(b"x")
    assert resolve(existing) == existing
    assert resolve(str(existing), entries=entries) == existing
    with pytest.raises(ZooError, match="--pretrained-backbone none"):  # offline, nothing cached
        resolve("tiny", home=tmp_path, entries=entries)
    with pytest.raises(ZooError, match="neither an existing file nor a zoo name"):
        resolve(tmp_path / "missing.safetensors", home=tmp_path, entries=entries)
    with pytest.raises(ZooError, match="neither an existing file nor a zoo name"):
        resolve("res51-coco", home=tmp_path)


def test_home_defaults_to_user_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HEATPOSE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert zoo.heatpose_home() == tmp_path / ".cache" / "heatpose"
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path / "h"))
    assert zoo.heatpose_home() == tmp_path / "h"
    assert zoo.heatpose_home(tmp_path / "x") == tmp_path / "x"


def test_builtin_entries_match_the_published_table() -> None:
    table = {e.name: e for e in zoo.list_entries()}
    assert {n for n, e in table.items() if e.kind == "pose"} == {
        "res50-coco-256x192",
        "res50-dark-coco-256x192",
    }
    plain, dark = table["res50-coco-256x192"], table["res50-dark-coco-256x192"]
    published = {e.name: (e.sha256_prefix, e.coco_val_ap, e.decode_mode) for e in (plain, dark)}
    assert published == {  # the published table; mmpose's plain config decodes with the shift
        "res50-coco-256x192": ("04af38ce", 0.718, "shift"),
        "res50-dark-coco-256x192": ("c129dcb6", 0.724, "dark"),
    }
    base = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco"
    for e in (plain, dark):
        assert e.layout == "mmpose" and e.base_url == base
        assert f"-{e.sha256_prefix}_" in e.filename and e.filename.endswith(".pth")
    assert plain.filename.startswith("td-hm_res50_8xb64-210e_coco-256x192")
    assert dark.filename.startswith("td-hm_res50_dark-8xb64-210e_coco-256x192")


def test_cli_fetch_and_list(tmp_path: Path, server, monkeypatch, capsys) -> None:
    url, _, entries = server
    monkeypatch.setattr(zoo, "ENTRIES", entries)
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", url)
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    assert weights_cli.main(["list"]) == 0
    assert re.search(r"^tiny +0\.500 +dark +no ", capsys.readouterr().out, re.M)
    assert weights_cli.main(["fetch", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny.safetensors")
    # several names in one call (the pose model and the detector, in deployments): one path each
    assert weights_cli.main(["fetch", "tiny", "tiny"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "tiny.safetensors")] * 2
    assert weights_cli.main(["list"]) == 0
    assert re.search(r"^tiny +0\.500 +dark +yes ", capsys.readouterr().out, re.M)
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", _closed_port_url())
    assert weights_cli.main(["fetch", "tiny", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heatpose weights fetch: error: cannot download")
    assert "Traceback" not in err
    assert weights_cli.main(["fetch", "nope"]) == 2
    assert "unknown zoo name 'nope'" in capsys.readouterr().err


# ---- person detectors: torchvision state dicts through the same zoo ---------------------------


@pytest.fixture(scope="module")
def detector_file() -> tuple[dict[str, torch.Tensor], bytes]:
    """A random MobileNetV3 Faster R-CNN state dict in torchvision's published layout, and its
    bytes as torchvision's ``.pth`` files are (``torch.save`` of the bare state dict)."""
    state = published_state("person-frcnn-mbv3")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


@pytest.fixture
def detector_server(detector_file) -> Iterator[tuple[str, _Files, dict]]:
    """(base URL, server state, zoo table with a detector entry for the served file)."""
    data = detector_file[1]
    prefix = hashlib.sha256(data).hexdigest()[:8]
    filename = f"fasterrcnn_mobilenet_v3_large_fpn-{prefix}.pth"
    state = _Files(files={filename: data})
    entry = ZooEntry(
        "det",
        filename,
        prefix,
        coco_val_ap=0.3,
        layout="torchvision",
        base_url="http://127.0.0.1:9/unused",
        kind="detector",
        arch="person-frcnn-mbv3",
        gflops=4.5,
    )
    with _serving(state) as url:
        yield f"{url}/m", state, {"det": entry}


def _boxes(detector: PersonDetector) -> list[np.ndarray]:
    return [np.hstack([d.boxes, d.scores[:, None]]) for d in detector.detect(images()[:2])]


def test_detector_fetch_verifies_caches_and_loads_as_published(
    tmp_path: Path, detector_server, detector_file
) -> None:
    url, state, entries = detector_server
    path = fetch("det", home=tmp_path, base_url=url, progress=False, entries=entries)
    assert path == tmp_path / "det.safetensors" and _files(tmp_path) == ["det.safetensors"]
    with safe_open(str(path), framework="pt") as f:
        source = json.loads(f.metadata()[DETECTOR_KEY])
    assert source["arch"] == "person-frcnn-mbv3"
    assert source["sha256"] == hashlib.sha256(detector_file[1]).hexdigest()
    cached = read_state_dict(path)
    assert set(cached) == set(detector_file[0])
    assert all(torch.equal(cached[k], v) for k, v in detector_file[0].items())
    # the zoo name and the published .pth give the same detector
    published = tmp_path / "published.pth"
    published.write_bytes(detector_file[1])
    by_name = load_detector("det", "cpu", home=tmp_path, entries=entries, **SIZES)
    by_file = PersonDetector.from_file(published, "person-frcnn-mbv3", "cpu", **SIZES)
    for a, b in zip(_boxes(by_name), _boxes(by_file), strict=True):
        assert len(a) > 0
        np.testing.assert_array_equal(a, b)
    assert len(state.requests) == 1  # load_detector used the cache
    with pytest.raises(CheckpointError, match="person detector's weights, not a pose model"):
        load(path)


def test_detector_hash_mismatch_resume_and_offline(tmp_path: Path, detector_server) -> None:
    url, state, entries = detector_server
    wrong = {"det": ZooEntry(**{**entries["det"].__dict__, "sha256_prefix": "0" * 8})}
    with pytest.raises(ZooError, match=r"starts with 00000000.*nothing was cached"):
        fetch("det", home=tmp_path, base_url=url, progress=False, entries=wrong)
    assert _files(tmp_path) == []
    state.cut_next = 1  # the connection breaks halfway: the rest comes with a Range request
    fetch("det", home=tmp_path, base_url=url, progress=False, entries=entries)
    assert state.requests[-1]["range"] is not None and state.requests[-1]["range"] != "bytes=0-"
    with pytest.raises(ZooError, match=r"cannot download.*detector's weights as a local file"):
        fetch("det", home=tmp_path / "empty", base_url=_closed_port_url(), entries=entries)
    with pytest.raises(ZooError, match=r"neither an existing file nor a zoo name \(det\)"):
        resolve("res50-coco-256x192", home=tmp_path, kind="detector", entries=entries)


def test_detector_entries_match_torchvision_weight_enums() -> None:
    """URL, sha256 prefix, box AP and GFLOPs as the installed torchvision publishes them."""
    enums = {
        "person-rcnn-r50-fpn": KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
        "person-frcnn-mbv3": FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    }
    entries = zoo.list_entries()
    detectors = {e.name: e for e in entries if e.kind == "detector" and e.layout == "torchvision"}
    assert set(detectors) == set(enums) == set(ARCHS)
    for name, weights in enums.items():
        e = detectors[name]
        assert f"{e.base_url}/{e.filename}" == weights.url
        assert re.fullmatch(rf".*-{e.sha256_prefix}\.pth", weights.url)
        box_ap = weights.meta["_metrics"]["COCO-val2017"]["box_map"] / 100
        assert e.coco_val_ap == pytest.approx(box_ap)
        assert e.gflops == pytest.approx(weights.meta["_ops"])
        assert e.arch == name and e.layout == "torchvision"
    assert detectors["person-rcnn-r50-fpn"].sha256_prefix == "fc266e95"
    assert detectors["person-frcnn-mbv3"].sha256_prefix == "fb6a3cc7"


def test_cli_lists_both_kinds(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    assert weights_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^person-rcnn-r50-fpn +0\.546 +- +no +detector +keypointrcnn_", out, re.M)
    assert re.search(r"^person-frcnn-mbv3 +0\.328 +- +no +detector +fasterrcnn_", out, re.M)
    assert re.search(r"^res50-dark-coco-256x192 +0\.724 +dark +no +pose ", out, re.M)


def test_cli_fetches_a_detector(tmp_path: Path, detector_server, monkeypatch, capsys) -> None:
    url, _, entries = detector_server
    monkeypatch.setattr(zoo, "ENTRIES", entries)
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", url)
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    assert weights_cli.main(["fetch", "det"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "det.safetensors")
    assert weights_cli.main(["list"]) == 0
    assert re.search(r"^det +0\.300 +- +yes +detector +fasterrcnn_", capsys.readouterr().out, re.M)
