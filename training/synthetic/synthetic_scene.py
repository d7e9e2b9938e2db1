"""One synthetic photo with a chosen number of people side by side (demos, docs, page tests).

``python -m training.synthetic.synthetic_scene --out docs/sample.jpg --people 1 --width 320 --height
400 --seed 1``
writes the repository's sample image. Unlike :mod:`training.synthetic.dataset` (random scenes for a
data set), the people here stand in a row, each in its own column, head to feet inside the image
(a hand may reach past the side edges), so a caller knows how many persons it shows and where.
"""

from __future__ import annotations

import sys

import numpy as np

from training.synthetic.dataset import background
from training.synthetic.synthetic_people import draw_person, sample_person


def people_scene(
    seed: int, *, width: int = 640, height: int = 480, people: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """``(image (height, width, 3) BGR uint8, keypoints (people, 17, 2) image px (x, y))``.

    Person ``i`` stands in column ``i`` of ``people`` equal columns (its pelvis at the column's
    centre), about 0.8 x ``height`` tall, its pelvis at mid-height. The image depends only on
    the arguments.
    """
    rng = np.random.default_rng(seed)
    img = background(rng, width, height)
    keypoints = []
    for i in range(people):
        ph = 0.8 * height * rng.uniform(0.92, 1.0)
        pelvis = np.array([(i + 0.5) * width / people, 0.52 * height])
        person = sample_person(rng, pelvis, ph)
        draw_person(img, np.zeros((height, width), np.uint8), person, rng)
        keypoints.append(person.keypoints)
    return img, np.asarray(keypoints, dtype=np.float64).reshape(people, -1, 2)


if __name__ == "__main__":  # python -m training.synthetic.synthetic_scene (README)
    from heatpose_cli.synth_scene import main

    sys.exit(main())
