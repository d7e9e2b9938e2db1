"""One story everywhere (issue 22 §4): persons numbered from #1 on the overlay as on the page;
``heatpose predict``'s files are what its --help says; /v1/model and /metrics name the backend,
the ONNX file served (its sha256) and the detector."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from app.http.schemas import ImageResult, ModelSummary
from app.render.overlay import box_label
from heatpose_cli.predict import main as predict_main
from heatpose_cli.predict_flags import parser
from tests.app.engine.test_detection import StandIn, upload
from tests.app.http.test_api import image

STATIC = Path(__file__).resolve().parents[2] / "app" / "static" / "js"


def test_overlay_numbers_persons_as_the_page_does() -> None:
    assert box_label(0, None) == "#1"
    assert box_label(2, 0.876) == "#3 0.88"
    # the page's table and box labels: `#${i + 1}`
    assert "`#${i + 1}`" in (STATIC / "photo.js").read_text()


def test_predict_files_are_what_its_help_says(app_checkpoint: Path, tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), (90, 120, 30)).save(tmp_path / "a.jpg")
    args = [str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert predict_main([*args, "--checkpoint", str(app_checkpoint), "--detector", "none"]) == 0
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    help_text = " ".join(parser().format_help().split())
    assert "`model` and the fields of one `images[]` entry" in help_text
    assert "no `timing`" in help_text
    assert set(doc) == {"model", *ImageResult.model_fields}
    ModelSummary.model_validate(doc.pop("model"))
    ImageResult.model_validate(doc)


def info_labels(metrics: str) -> dict[str, str]:
    (line,) = [ln for ln in metrics.splitlines() if ln.startswith("heatpose_model_info{")]
    assert line.endswith(" 1.0"), line
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


@pytest.mark.anyio
async def test_model_and_metrics_name_the_torch_backend(serve_app) -> None:
    async with serve_app() as (client, _):
        info = (await client.get("/v1/model")).json()
        labels = info_labels((await client.get("/metrics")).text)
    assert (info["backend"], info["onnx_sha256"]) == ("torch", None)
    assert labels == {"model": "tiny-res18", "backend": "torch", "onnx_sha256": "", "detector": ""}


@pytest.mark.slow
@pytest.mark.anyio
async def test_model_and_metrics_name_the_onnx_file_served(
    serve_app, app_checkpoint: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from models.runtime.export import export_onnx
    from models.weights.checkpoint import load

    bundle = load(app_checkpoint)
    onnx = export_onnx(bundle.model, bundle.config, tmp_path / "model.onnx")
    digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
    settings = {"backend": "onnxruntime", "onnx": str(onnx), "warmup": False}
    async with serve_app(stand_in=StandIn(), **settings) as (client, _):
        info = (await client.get("/v1/model")).json()
        labels = info_labels((await client.get("/metrics")).text)
        assert (await client.post("/predict", files=upload(image()))).status_code == 200
    assert (info["backend"], info["onnx_sha256"]) == ("onnxruntime", digest)
    assert (labels["backend"], labels["onnx_sha256"]) == ("onnxruntime", digest)
    assert labels["detector"] == info["detector"] == "StandIn (given)"


def test_keypoint_spec_keeps_its_category() -> None:
    from dataclasses import replace

    from models.pose.keypoints import COCO_KEYPOINTS, KeypointSpec

    animal = replace(COCO_KEYPOINTS, category="quadruped")
    assert KeypointSpec.from_dict(animal.to_dict()) == animal
    old = {k: v for k, v in COCO_KEYPOINTS.to_dict().items() if k != "category"}
    assert KeypointSpec.from_dict(old).category == "person"  # files written before the field


@pytest.mark.anyio
async def test_predict_names_the_models_category(
    serve_app, app_checkpoint: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from models.weights.checkpoint import load, save

    bundle = load(app_checkpoint)
    config = replace(bundle.config, spec=replace(bundle.config.spec, category="quadruped"))
    save(tmp_path / "animal.safetensors", bundle.model, config)
    async with serve_app(checkpoint=str(tmp_path / "animal.safetensors")) as (client, _):
        r = await client.post("/predict", files=upload(image()))
        info = (await client.get("/v1/model")).json()
    assert r.json()["model"]["category"] == "quadruped"
    assert info["keypoints"]["category"] == "quadruped"
    # the page labels them with it ("1 quadruped(s)"), never "person(s)"
    photo = (STATIC / "photo.js").read_text()
    assert "person(s)" not in photo and "model?.category" in photo
