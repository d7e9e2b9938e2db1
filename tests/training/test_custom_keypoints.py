"""Issue 14: training on the synthetic four-legged animals (12 keypoints, category id 2).

A few steps write a checkpoint whose spec has the animal's names, flip pairs and sigmas;
evaluation runs pycocotools with those sigmas on that category; ``--init-from`` a COCO-person
checkpoint copies the shared layers and reports the fresh channels.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from heatpose_cli import synth as synthetic
from heatpose_cli import train
from models.inference.predictor import Predictor
from models.pose.codec import HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS
from models.weights.checkpoint import ModelBundle, build_model, load, read_config, save
from models.weights.model_config import ModelConfig
from training.evaluate import evaluate
from training.loop.init_from import copy_weights, load_source
from training.synthetic import synthetic_animal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
NAMES = synthetic_animal.NAMES


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data-path",
        str(data),
        "--train-split",
        "train",
        "--val-split",
        "val",
        "--depth",
        "18",
        "--input-size",
        "64x96",
        "-b",
        "4",
        "-j",
        "0",
        "--epochs",
        "1",
        "--warmup-iters",
        "2",
        "--pretrained-backbone",
        "none",
        "--no-progress",
        "--output-dir",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def data(module_tmp: Callable[[str], Path]) -> Path:
    root = module_tmp("animal")
    argv = ["--out", str(root / "data"), "--train", "4", "--val", "2", "--seed", "4"]
    assert synthetic.main([*argv, "--skeleton", "animal", "--width", "256", "--height", "192"]) == 0
    return root / "data"


@pytest.fixture(scope="module")
def run(data: Path) -> Path:
    sigmas = data.parent / "sigmas.json"
    sigmas.write_text(json.dumps({"tail_tip": 0.09}))
    out = data.parent / "run"
    assert train.main(_argv(data, out, "--eval-every", "1", "--oks-sigmas", str(sigmas))) == 0
    return out


def test_the_data_set_has_its_own_category(data: Path) -> None:
    doc = json.loads((data / "annotations" / "animal_keypoints_train.json").read_text())
    (cat,) = doc["categories"]
    assert (cat["id"], cat["name"], cat["keypoints"]) == (2, "quadruped", list(NAMES))
    assert doc["annotations"] and all(a["category_id"] == 2 for a in doc["annotations"])
    assert all(len(a["keypoints"]) == 36 for a in doc["annotations"])


def test_a_few_steps_write_the_animal_spec(run: Path) -> None:
    spec = read_config(run / "last.safetensors").spec
    assert spec.category == "quadruped"  # the answers and the page label it so
    assert spec.names == NAMES
    assert spec.skeleton == synthetic_animal.SKELETON
    for i, name in enumerate(NAMES):  # left <-> right by name, centre joints to themselves
        other = name.replace("left", "R").replace("right", "left").replace("R", "right")
        assert NAMES[spec.flip_indices[i]] == other
    want = {"nose": 0.026, "tail_tip": 0.09}  # COCO's nose, the file's tail tip, else default
    assert spec.sigmas == tuple(want.get(n, 0.07) for n in NAMES)
    results = json.loads((run / "results_epoch1.json").read_text())
    assert results and {r["category_id"] for r in results} == {2}
    assert all(len(r["keypoints"]) == 36 for r in results)


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_evaluation_runs_pycocotools_with_the_checkpoints_sigmas(run: Path, data: Path) -> None:
    bundle = load(run / "last.safetensors")
    out = run / "eval.json"
    stats = evaluate(Predictor(bundle, device="cpu"), data, "val", results_path=out)
    # Independently: pycocotools on the written results with the spec's sigmas, category 2.
    gt = _coco(data / "annotations" / "animal_keypoints_val.json")
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(json.loads(out.read_text())), "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(bundle.config.spec.sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert stats["AP"] == pytest.approx(ev.stats[0]) and stats["AR"] == pytest.approx(ev.stats[5])
    # The sigmas decide: huge ones make any prediction a match, tiny ones none.
    for sigma, ap in ((100.0, 1.0), (1e-4, 0.0)):
        spec = replace(bundle.config.spec, sigmas=(sigma,) * len(NAMES))
        other = ModelBundle(bundle.model, replace(bundle.config, spec=spec))
        got = evaluate(Predictor(other, device="cpu"), data, "val", nms_threshold=None)
        assert got["AP"] == pytest.approx(ap, abs=1e-6), (sigma, got)


@pytest.fixture(scope="module")
def person_checkpoint(module_tmp: Callable[[str], Path]) -> Path:
    """A COCO-person ResNet-18 in BGR (as the original SimpleBaselines weights)."""
    torch.manual_seed(1)
    codec = HeatmapCodec.for_input((96, 64))
    config = ModelConfig(
        name="person-r18", depth=18, codec_params=codec.to_dict(), color_order="BGR"
    )
    model = build_model(config)
    with torch.no_grad():
        model.final_layer.weight.normal_(0.0, 0.5)
        model.final_layer.bias.uniform_(1.0, 2.0)
    path = module_tmp("person") / "person.safetensors"
    save(path, model, config)
    return path


def test_copy_weights_shares_by_name(person_checkpoint: Path) -> None:
    source = load(person_checkpoint)
    names = ("left_wrist", "tail", "nose")
    spec = replace(
        COCO_KEYPOINTS,
        names=names,
        flip_indices=(0, 1, 2),
        skeleton=(),
        sigmas=(0.07,) * 3,
        upper_body=(),
        lower_body=(),
    )
    config = ModelConfig(depth=18, spec=spec)
    model = build_model(config)
    fresh_before = model.final_layer.weight[1].detach().clone()
    said: list[str] = []
    done = copy_weights(model, config, source, say=said.append)
    src = source.model.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("final_layer"):
            assert torch.equal(value, src[key]), key
    w, b = model.final_layer.weight, model.final_layer.bias
    assert torch.equal(w[0], src["final_layer.weight"][9])  # left_wrist is COCO channel 9
    assert torch.equal(w[2], src["final_layer.weight"][0]) and b[2] == src["final_layer.bias"][0]
    assert torch.equal(w[1], fresh_before) and b[1] == 0.0
    assert (done.shared, done.fresh) == (("left_wrist", "nose"), ("tail",))
    assert "2 of 3 keypoint channels copied (left_wrist, nose), fresh: tail" in said[0]


def test_init_from_a_person_checkpoint_onto_the_animals(
    person_checkpoint: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = data.parent / "init"
    argv = _argv(
        data, out, "--init-from", str(person_checkpoint), "--lr", "1e-12", "--eval-every", "0"
    )
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    fresh = ", ".join(n for n in NAMES if n != "nose")
    assert f"1 of 12 keypoint channels copied (nose), fresh: {fresh}" in printed
    got, src = load(out / "last.safetensors"), load(person_checkpoint)
    assert got.config.color_order == "BGR" and got.config.mean == src.config.mean
    assert got.config.provenance["init_from"] == str(person_checkpoint)
    assert got.config.spec.names == NAMES
    g, s = got.model.state_dict(), src.model.state_dict()
    assert torch.allclose(g["conv1.weight"], s["conv1.weight"], atol=1e-6)
    assert torch.allclose(g["deconv_layers.0.weight"], s["deconv_layers.0.weight"], atol=1e-6)
    assert torch.allclose(g["final_layer.weight"][0], s["final_layer.weight"][0], atol=1e-6)
    assert g["final_layer.weight"][1:].abs().max() < 0.01  # fresh: N(0, 0.001)


def test_init_from_a_zoo_name_reads_the_zoo_cache(
    person_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    (tmp_path / "res50-coco-256x192.safetensors").write_bytes(person_checkpoint.read_bytes())
    assert load_source("res50-coco-256x192").config.name == "person-r18"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--init-from", "no-such-model"], "--init-from no-such-model: 'no-such-model' is neither"),
        (["--depth", "34"], "is a ResNet-18 model, this run a ResNet-34: pass --depth 18"),
    ],
)
def test_init_from_errors_are_one_line(
    extra: list[str],
    needle: str,
    person_checkpoint: Path,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*_argv(data, tmp_path / "o", "--init-from", str(person_checkpoint)), *extra]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
