"""A synthetic COCO-format keypoint data set of procedurally drawn figures (no download needed).

``heatpose synth --out DIR --train N --val M --seed S [--skeleton animal]`` (flags in
:mod:`heatpose_cli.synth`) writes

- ``DIR/train/000000000001.jpg`` ... and ``DIR/val/...`` (JPEG, BGR as cv2 writes them),
- ``DIR/annotations/person_keypoints_train.json`` and ``..._val.json`` (COCO keypoints format,
  loadable by ``pycocotools.coco.COCO`` and usable by ``COCOeval``); with ``--skeleton animal``
  ``animal_keypoints_<split>.json`` with the category ``quadruped`` (id 2, 12 keypoints).

Each image has 1-3 people (see :mod:`training.synthetic.synthetic_people`), or four-legged animals
(see
:mod:`training.synthetic.synthetic_animal`), over a cluttered background,
sometimes partly hidden by objects or by each other, sometimes cut by the image border.
Keypoints are ``(x, y)`` image pixels with COCO visibility flags: 2 visible; 1 labelled but
hidden by another person or an object drawn over it; 0 not labelled (outside the image, or the
face of a person seen from behind), stored as ``0, 0, 0``. ``bbox`` ``[x, y, w, h]`` and
``area`` are those of the person's visible pixels, as COCO's come from the visible segmentation.
Image ``i`` of a split depends only on ``(seed, split, i)``, so output is identical for any
number of worker processes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.pose.keypoints import COCO_KEYPOINTS
from training.synthetic import synthetic_animal
from training.synthetic.synthetic_people import draw_person, sample_person

SPLITS = ("train", "val")


def place_person(rng: np.random.Generator, width: int, height: int) -> Any:
    """A person somewhere in a ``width`` x ``height`` scene, sometimes cut by its border."""
    ph = rng.uniform(0.35, 0.9) * height
    pelvis = np.array([rng.uniform(-0.05, 1.05) * width, 0.0])
    pelvis[1] = rng.uniform(0.5 * ph, height - 0.45 * ph + 1) + rng.normal(0, 0.08 * ph)
    return sample_person(rng, pelvis, ph)


@dataclass(frozen=True)
class Skeleton:
    """A kind of figure the generator draws.

    Attributes:
        category: the COCO category (``id``, ``name``, ``supercategory``, ``keypoints`` names,
            1-based ``skeleton``) its annotations carry.
        file_prefix: annotation files are ``<file_prefix>_keypoints_<split>.json``.
        place: ``(rng, width, height) -> figure`` with ``keypoints (K, 2)`` image px and
            ``labelled (K,)``.
        draw: ``(image, mask, figure, rng)`` paints it on the image and its pixels on the mask.
    """

    category: dict[str, Any]
    file_prefix: str
    place: Callable[[np.random.Generator, int, int], Any]
    draw: Callable[[np.ndarray, np.ndarray, Any, np.random.Generator], None]


def _category(cid: int, name: str, sup: str, names: tuple, links: tuple) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name,
        "supercategory": sup,
        "keypoints": list(names),
        "skeleton": [[a + 1, b + 1] for a, b in links],
    }


SKELETONS: dict[str, Skeleton] = {
    "person": Skeleton(
        _category(1, "person", "person", COCO_KEYPOINTS.names, COCO_KEYPOINTS.skeleton),
        "person",
        place_person,
        draw_person,
    ),
    "animal": Skeleton(
        _category(2, "quadruped", "animal", synthetic_animal.NAMES, synthetic_animal.SKELETON),
        "animal",
        synthetic_animal.place_animal,
        synthetic_animal.draw_animal,
    ),
}
"""The figures ``--skeleton`` chooses from."""


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A cluttered BGR uint8 background (height, width, 3): smooth colour field plus shapes."""
    small = rng.integers(0, 256, size=(rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(8, 30)):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(8, max(width, height) // 4))
        kind = rng.integers(4)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + s, y + int(rng.integers(8, s + 9))), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), s // 2, color, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (x + int(rng.integers(-s, s)), y + int(rng.integers(-s, s)))
            cv2.line(img, (x, y), end, color, int(rng.integers(1, 8)), cv2.LINE_AA)
        else:
            pts = rng.integers(-s, s, size=(int(rng.integers(3, 7)), 2)) + np.array([x, y])
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
    noise = rng.normal(0.0, rng.uniform(2.0, 10.0), size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _occluder(
    rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, box: np.ndarray
) -> None:
    """Draw an object over part of ``box`` (x1, y1, x2, y2); its pixels get owner -1."""
    x1, y1, x2, y2 = box
    w, h = max(x2 - x1, 4.0), max(y2 - y1, 4.0)
    cx, cy = rng.uniform(x1, x2), rng.uniform(y1, y2)
    ow, oh = w * rng.uniform(0.2, 0.6), h * rng.uniform(0.1, 0.35)
    color = tuple(int(c) for c in rng.integers(0, 256, size=3))
    mask = np.zeros(owner.shape, np.uint8)
    for target, c in ((img, color), (mask, 255)):
        if rng.random() < 0.5:
            p1, p2 = (int(cx - ow / 2), int(cy - oh / 2)), (int(cx + ow / 2), int(cy + oh / 2))
            cv2.rectangle(target, p1, p2, c, -1)
        else:
            axes = (int(ow / 2) + 1, int(oh / 2) + 1)
            cv2.ellipse(target, (int(cx), int(cy)), axes, 0.0, 0, 360, c, -1)
    owner[mask > 0] = -1


def visibility(
    keypoints: np.ndarray, labelled: np.ndarray, owner: np.ndarray, pid: int
) -> np.ndarray:
    """COCO ``(K, 3)`` rows ``x, y, v`` for one person.

    Args:
        keypoints: ``(K, 2)`` image px.
        labelled: ``(K,)`` bool, False for points without a location (face seen from behind).
        owner: ``(H, W)`` which person (id) or object (-1) owns each pixel after drawing.
        pid: this person's id in ``owner``.

    Returns:
        ``v = 2`` where the pixel under the point is the person's own, ``1`` where it belongs to
        something drawn over it, ``0`` (and ``x = y = 0``) when unlabelled or outside the image.
    """
    height, width = owner.shape
    out = np.zeros((len(keypoints), 3))
    for j, (x, y) in enumerate(keypoints):
        if labelled[j] and 0 <= x < width and 0 <= y < height:
            out[j] = (x, y, 2 if owner[int(y), int(x)] == pid else 1)
    return out


def render_image(
    rng: np.random.Generator, width: int, height: int, *, skeleton: str = "person"
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One scene of ``skeleton`` figures: ``(image (height, width, 3) BGR uint8, annotations)``.

    Annotations are dicts with ``keypoints`` (3K floats, image px, flags 0/1/2),
    ``num_keypoints``, ``bbox`` [x, y, w, h] and ``area`` of the visible pixels, and
    ``segmentation`` (polygons of the visible pixels); ids are assigned by the caller.
    """
    img = background(rng, width, height)
    owner = np.zeros((height, width), np.int16)  # 0 background, p+1 person p, -1 object
    people = []
    kind = SKELETONS[skeleton]
    for pid in range(1, int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25])) + 1):
        person = kind.place(rng, width, height)
        mask = np.zeros((height, width), np.uint8)
        kind.draw(img, mask, person, rng)
        owner[mask > 127] = pid
        people.append(person)
    if rng.random() < 0.35:
        k = people[rng.integers(len(people))].keypoints
        _occluder(rng, img, owner, np.concatenate([k.min(0), k.max(0)]))
    anns = []
    for pid, person in enumerate(people, start=1):
        visible_px = owner == pid
        if not visible_px.any():
            continue
        kps = visibility(person.keypoints, person.labelled, owner, pid)
        ys, xs = np.nonzero(visible_px)
        x0, y0 = float(xs.min()), float(ys.min())
        contours, _ = cv2.findContours(
            visible_px.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        anns.append(
            {
                "keypoints": [round(float(v), 2) for v in kps.ravel()],
                "num_keypoints": int((kps[:, 2] > 0).sum()),
                "bbox": [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0],
                "area": float(visible_px.sum()),
                "segmentation": [c.ravel().tolist() for c in contours if len(c) >= 3],
            }
        )
    return img, anns


def _make_one(
    index: int, seed: int, split: str, width: int, height: int, out_dir: str, skeleton: str
) -> tuple:
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    img, anns = render_image(rng, width, height, skeleton=skeleton)
    name = f"{index + 1:012d}.jpg"
    if not cv2.imwrite(str(Path(out_dir) / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"could not write {Path(out_dir) / name}")
    return index + 1, name, anns


def categories(skeleton: str = "person") -> list[dict[str, Any]]:
    """The COCO category of ``skeleton`` figures with its keypoint names and 1-based skeleton."""
    return [dict(SKELETONS[skeleton].category)]


def write_split(
    out: Path,
    split: str,
    count: int,
    *,
    seed: int,
    width: int,
    height: int,
    workers: int = 0,
    skeleton: str = "person",
) -> Path:
    """Write ``count`` images of ``split`` and its annotation file; returns the JSON path."""
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    make = partial(
        _make_one,
        seed=seed,
        split=split,
        width=width,
        height=height,
        out_dir=str(img_dir),
        skeleton=skeleton,
    )
    if workers > 1:
        with Pool(workers) as pool:
            results = list(pool.imap(make, range(count), chunksize=8))
    else:
        results = [make(i) for i in range(count)]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    kind = SKELETONS[skeleton]
    for image_id, name, anns in results:
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for a in anns:
            a.update(id=len(annotations) + 1, image_id=image_id, iscrowd=0)
            a.update(category_id=kind.category["id"])
            annotations.append(a)
    path = out / "annotations" / f"{kind.file_prefix}_keypoints_{split}.json"
    what = f"{kind.category['name']} figures"
    doc = {
        "info": {"description": f"heatpose synthetic {what}, seed {seed}", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(skeleton),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    return path


def run(args: Any) -> int:
    """Write the data set the parsed flags describe (:func:`heatpose_cli.synth.parse_args`);
    exit status (2 with one line naming ``--out`` when it cannot be written)."""
    try:
        for split, count in (("train", args.train), ("val", args.val)):
            path = write_split(
                args.out,
                split,
                count,
                seed=args.seed,
                width=args.width,
                height=args.height,
                workers=args.workers,
                skeleton=args.skeleton,
            )
            print(f"{split}: {count} images -> {path}")
    except OSError as e:
        print(
            f"heatpose synth: error: cannot write the data set under --out {args.out}: {e}",
            file=sys.stderr,
        )
        return 2
    return 0
