"""Synthetic video: scenes move as described, truth matches the pixels, the CLI writes files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heatpose_cli import synth_video
from training.synthetic import synthetic_video as sv


@pytest.fixture(scope="module")
def leave() -> sv.SyntheticVideo:
    return sv.make_video("leave_and_return", seed=1)


def _pelvis(video: sv.SyntheticVideo, pid: int = 1) -> np.ndarray:
    return np.stack(
        [
            (p.keypoints[11] + p.keypoints[12]) / 2
            for r in video.truth
            for p in r
            if p.person_id == pid
        ]
    )


def test_frames_are_rgb_uint8_with_timestamps_and_deterministic() -> None:
    a = sv.make_video("static", width=160, height=120, fps=10.0, seed=3)
    b = sv.make_video("static", width=160, height=120, fps=10.0, seed=3)
    assert len(a.frames) == 21 and a.size == (160, 120)
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in a.frames)
    np.testing.assert_allclose(a.timestamps, np.arange(21) / 10.0)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    k = np.stack([r[0].keypoints for r in a.truth])
    assert np.ptp(k, axis=0).max() == 0  # static: the pose never moves
    assert not np.array_equal(a.frames[0], a.frames[1])  # but the sensor noise does


def test_constant_speed_walker_moves_at_the_asked_speed() -> None:
    v = sv.make_video("constant_speed", fps=25.0, speed=80.0)
    step = np.diff(_pelvis(v), axis=0)
    np.testing.assert_allclose(step, np.tile([80.0 / 25.0, 0.0], (len(step), 1)), atol=1e-9)


def test_crossing_people_swap_sides_and_one_hides_the_other() -> None:
    v = sv.make_video("crossing")
    x1, x2 = _pelvis(v, 1)[:, 0], _pelvis(v, 2)[:, 0]
    assert x1[0] < x2[0] and x1[-1] > x2[-1]
    hidden = [int((p.flags == 1).sum()) for r in v.truth for p in r if p.person_id == 2]
    assert max(hidden) >= 3  # the far person is behind the near one at the crossing


def test_truth_boxes_match_the_pixels_that_change(leave: sv.SyntheticVideo) -> None:
    """Against the empty frames (the person away): the pixels that differ are the person's."""
    empty = [i for i, r in enumerate(leave.truth) if not r]
    bg = leave.frames[empty[len(empty) // 2]].astype(int)  # mid-gap: not even a fringe shows
    for i in (0, 10, len(leave.frames) - 1):
        (p,) = leave.truth[i]
        ys, xs = np.nonzero(np.abs(leave.frames[i] - bg).max(-1) > 40)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(found - p.box).max() <= 2, (found, p.box)
        vis = p.keypoints[p.flags == 2]
        assert np.all((vis >= p.box[:2] - 1) & (vis <= p.box[2:] + 1))


def test_leaving_person_is_absent_then_back(leave: sv.SyntheticVideo) -> None:
    present = np.array([len(r) == 1 for r in leave.truth])
    change = np.flatnonzero(np.diff(present.astype(int)))
    assert present[0] and present[-1] and len(change) == 2  # present, absent, present
    assert change[1] - change[0] > leave.fps  # gone for more than a second
    assert all(len(r) == 0 for r in leave.truth[change[0] + 1 : change[1] + 1])


def test_cli_writes_y4m_and_truth_json(tmp_path: Path) -> None:
    out = tmp_path / "clip.y4m"
    argv = ["--scene", "static", "--out", str(out), "--width", "96", "--height", "64", "--fps", "5"]
    assert synth_video.main(argv) == 0
    header = out.read_bytes().split(b"\n", 1)[0]
    assert header == b"YUV4MPEG2 W96 H64 F5:1 Ip A1:1 C420jpeg"
    truth = json.loads(out.with_suffix(".json").read_text())
    assert len(truth) == 11 == out.read_bytes().count(b"FRAME\n")
    assert (
        truth[3]["persons"][0]["person_id"] == 1 and len(truth[3]["persons"][0]["keypoints"]) == 17
    )


def test_cli_names_the_bad_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        synth_video.main(["--scene", "static", "--out", str(tmp_path / "clip.gif")])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown scene"):
        sv.make_video("dancing")
