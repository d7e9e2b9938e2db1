"""Every command an offline message suggests runs here as printed (issue 22 §1): the zoo's hint
gives the README's synthetic recipe, with ``--pretrained-backbone none``; the ImageNet download
error names ``--pretrained-backbone none``; no hint names one front door's setting for another."""

from __future__ import annotations

import re
import shlex
import urllib.error

import pytest

from models.pose.network import PoseResNet, PretrainedWeightsError
from models.weights import zoo
from tests.test_readme import readme_no_download_route


def suggested_commands(text: str) -> list[list[str]]:
    """The `heatpose ...` commands between backticks in ``text``, as words."""
    return [shlex.split(c) for c in re.findall(r"`(heatpose [^`]+)`", text)]


def test_offline_hint_gives_the_readme_recipe_that_runs_without_downloads() -> None:
    commands = [c for c in suggested_commands(zoo.OFFLINE_HINT) if c[1] in ("synth", "train")]
    synth, train, _ = readme_no_download_route()
    assert commands == [synth, train]


def test_offline_hint_commands_parse_and_train_from_scratch() -> None:
    from heatpose_cli.synth import build_parser as synth_parser
    from heatpose_cli.train import build_parser as train_parser

    synth, train = [c for c in suggested_commands(zoo.OFFLINE_HINT) if c[1] in ("synth", "train")]
    synth_parser().parse_args(synth[2:])
    args = train_parser().parse_args(train[2:])
    assert args.pretrained_backbone == "none"


def test_hints_name_no_front_doors_setting() -> None:
    # `heatpose predict` and `heatpose eval` print these too: each front door names its own flag.
    for hint in (zoo.OFFLINE_HINT, zoo.DETECTOR_OFFLINE_HINT):
        assert "HEATPOSE_CHECKPOINT" not in hint and "HEATPOSE_DETECTOR" not in hint
        assert "--detector" not in hint and "--checkpoint" not in hint


def test_imagenet_download_error_names_pretrained_backbone_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchvision.models import ResNet18_Weights

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", offline)
    with pytest.raises(PretrainedWeightsError, match="--pretrained-backbone none"):
        PoseResNet(18, 17).load_backbone("imagenet")
