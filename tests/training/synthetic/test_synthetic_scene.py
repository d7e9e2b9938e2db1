"""The row-of-people scene used by the demo page's tests and the README's sample image."""

from pathlib import Path

import cv2
import numpy as np

from heatpose_cli.synth_scene import main
from training.synthetic.synthetic_scene import people_scene


def test_people_stand_in_their_own_columns_inside_the_image() -> None:
    img, kps = people_scene(5, width=480, height=360, people=3)
    assert img.shape == (360, 480, 3) and img.dtype == np.uint8
    assert kps.shape == (3, 17, 2)
    for i, person in enumerate(kps):
        x, y = person[:, 0], person[:, 1]
        assert (y >= 0).all() and (y < 360).all()
        # Mostly in column i (limbs may reach a little into the next column).
        assert i * 160 - 40 <= np.median(x) < (i + 1) * 160 + 40
    again, kps2 = people_scene(5, width=480, height=360, people=3)
    assert np.array_equal(img, again) and np.array_equal(kps, kps2)
    assert not np.array_equal(img, people_scene(6, width=480, height=360, people=3)[0])


def test_cli_writes_the_image(tmp_path: Path) -> None:
    out = tmp_path / "s.jpg"
    assert main(["--out", str(out), "--people", "1", "--width", "320", "--height", "400"]) == 0
    assert cv2.imread(str(out)).shape == (400, 320, 3)
    assert main(["--out", str(tmp_path / "missing" / "s.jpg")]) == 2
