"""``python -m tests.app.page_server BOXES.json --port N``: the service with a stand-in person
detector, on uvicorn, for the page's browser tests.

Settings come from the ``HEATPOSE_*`` environment as for ``heatpose serve``; the person
detector is a test double behind ``PersonDetector.detect`` (``tests.helpers.detectors``'s
``StandInDetector``: the caller's score threshold and cap apply as in the real one) instead of
the one ``HEATPOSE_DETECTOR`` names. ``BOXES.json`` maps an image size ``"WxH"`` to the persons
a test knows that image shows: ``[[x1, y1, x2, y2, score], ...]`` (image px).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.helpers.detectors import Boxes, StandInDetector


def boxes_by_size(table: dict[str, list[list[float]]]) -> Callable[[np.ndarray], Boxes]:
    """``table`` (``"WxH"`` -> ``[[x1, y1, x2, y2, score], ...]`` image px) as a stand-in
    detector's lookup: an ``(H, W, 3)`` image -> the boxes listed for its size (none for
    other sizes)."""
    rows = {size: np.asarray(r, np.float32).reshape(-1, 5) for size, r in table.items()}
    none = np.zeros((0, 5), np.float32)

    def lookup(image: np.ndarray) -> Boxes:
        h, w = image.shape[:2]
        found = rows.get(f"{w}x{h}", none)
        return found[:, :4], found[:, 4]

    return lookup


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from app.main import create_app
    from app.settings import load_settings

    p = argparse.ArgumentParser(prog="python -m tests.app.page_server")
    p.add_argument("boxes", type=Path, help='JSON: {"WxH": [[x1, y1, x2, y2, score], ...]}')
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    detector = StandInDetector.per_image(boxes_by_size(json.loads(args.boxes.read_text())))
    app = create_app(load_settings(), detector=detector)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
