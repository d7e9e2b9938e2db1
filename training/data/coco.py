"""COCO-format top-down keypoint data: one sample per annotated person.

Layout (COCO 2017's): ``DATA/annotations/person_keypoints_<split>.json`` and
``DATA/<split>/<file_name>``. Any set in that layout works: COCO itself, or the one that
:mod:`training.synthetic.dataset` writes (splits ``train`` / ``val``). A data set of other keypoints may
name its file ``DATA/annotations/<name>_keypoints_<split>.json`` (one such file a split); the
persons used are the annotations of the category whose keypoint names are the model's
(:func:`keypoint_category`).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from training.data.transforms import TopDownTransform


class DataError(Exception):
    """A data set file is missing or unreadable; the message names it."""


def annotation_path(data_path: str | Path, split: str) -> Path:
    """``DATA/annotations/person_keypoints_<split>.json``, else the one
    ``DATA/annotations/<name>_keypoints_<split>.json`` there is (e.g. ``animal_keypoints_``)."""
    person = Path(data_path) / "annotations" / f"person_keypoints_{split}.json"
    others = sorted(person.parent.glob(f"*_keypoints_{split}.json"))
    return others[0] if not person.is_file() and len(others) == 1 else person


def keypoint_category(coco: COCO, names: tuple[str, ...]) -> int | None:
    """The id of ``coco``'s category whose keypoint names are ``names`` (the lowest such id),
    or ``None`` when there is none."""
    ids = [c["id"] for c in coco.dataset.get("categories", []) if c.get("keypoints") == list(names)]
    return min(ids) if ids else None


def available_splits(data_path: str | Path) -> list[str]:
    """The splits of ``DATA``, sorted: the ``<split>`` of each
    ``DATA/annotations/<name>_keypoints_<split>.json`` (``person_keypoints_`` for people)."""
    marker, suffix = "_keypoints_", ".json"
    files = (Path(data_path) / "annotations").glob(f"*{marker}*{suffix}")
    splits = {f.name.split(marker, 1)[1][: -len(suffix)] for f in files if f.is_file()}
    return sorted(splits)


def require_annotation_file(data_path: str | Path, split: str) -> Path:
    """The split's annotation file (:func:`annotation_path`), or :class:`DataError` naming the
    splits that ``DATA`` has."""
    path = annotation_path(data_path, split)
    if not path.is_file():
        splits = available_splits(data_path)
        found = f"splits there: {', '.join(splits)}" if splits else "no split there"
        raise DataError(
            f"annotation file not found: {path} ({found}; expected DATA/annotations/"
            f"person_keypoints_<split>.json; check --data-path and the split name)"
        )
    return path


def load_coco(data_path: str | Path, split: str) -> COCO:
    """The split's annotations through pycocotools (its progress prints silenced)."""
    path = require_annotation_file(data_path, split)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except Exception as e:  # json errors, missing keys
        raise DataError(f"cannot read annotation file {path}: {type(e).__name__}: {e}") from e


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 BGR; a clear error naming the file if not."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        what = "missing" if not Path(path).is_file() else "unreadable (not an image?)"
        raise DataError(f"image file {what}: {path}")
    return image


@dataclass(frozen=True)
class PersonRecord:
    """One annotated person: ``keypoints (K, 3)`` image px with flags, ``box`` xywh clipped to
    the image (image px)."""

    image_id: int
    file: Path
    keypoints: np.ndarray
    box: np.ndarray
    ann_id: int


def clip_box(box_xywh: list[float], width: int, height: int) -> np.ndarray | None:
    """Clip an ``[x, y, w, h]`` box to the image; ``None`` when nothing of it is left."""
    x, y, w, h = box_xywh
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + max(0.0, w)), min(float(height), y + max(0.0, h))
    if x2 <= x1 or y2 <= y1:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1])


def person_records(
    coco: COCO, image_dir: Path, category_id: int | None = None
) -> list[PersonRecord]:
    """Persons (of ``category_id``; ``None``: of any category) with iscrowd 0, at least one
    labelled keypoint and a valid clipped box."""
    records = []
    cats = [] if category_id is None else [category_id]
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=cats)):
            kp = np.asarray(ann.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
            if ann.get("iscrowd", 0) or len(kp) == 0 or not (kp[:, 2] > 0).any():
                continue
            box = clip_box(ann["bbox"], info["width"], info["height"])
            if box is None:
                continue
            records.append(
                PersonRecord(image_id, image_dir / info["file_name"], kp, box, ann["id"])
            )
    return records


class CocoKeypoints(Dataset):
    """Top-down person samples of one split.

    Item ``i`` is a dict: ``image`` ``(h, w, 3)`` uint8 RGB crop (input px; the trainer
    normalises it in the checkpoint's colour order), ``heatmaps`` ``(K, H, W)`` float32,
    ``weights`` ``(K,)`` float32, ``keypoints`` ``(K, 2)`` float32 input px, and the meta
    ``image_id``, ``ann_id``, ``center`` / ``scale`` ``(2,)`` image px, ``box_score`` (1.0:
    ground truth). Augmentation draws come from ``numpy.random.default_rng((seed, epoch, i))``,
    so a sample is the same in any worker, and :meth:`set_epoch` changes them per epoch.
    With ``repeat > 1`` an epoch goes over the persons ``repeat`` times (for small sets).
    """

    def __init__(
        self,
        data_path: str | Path,
        split: str,
        transform: TopDownTransform,
        seed: int = 0,
        repeat: int = 1,
    ) -> None:
        self.coco = load_coco(data_path, split)
        self.image_dir = Path(data_path) / split
        if not self.image_dir.is_dir():
            raise DataError(f"image directory not found: {self.image_dir} (check --data-path)")
        names = transform.spec.names
        category = keypoint_category(self.coco, names)
        if category is None:
            raise DataError(
                f"{annotation_path(data_path, split)} has no category with the model's "
                f"{len(names)} keypoints ({', '.join(names[:4])}, ...)"
            )
        self.records = person_records(self.coco, self.image_dir, category)
        if not self.records:
            raise DataError(f"no usable person annotations in {annotation_path(data_path, split)}")
        num_k = transform.spec.num_keypoints
        if self.records[0].keypoints.shape[0] != num_k:
            raise DataError(
                f"{annotation_path(data_path, split)} has {self.records[0].keypoints.shape[0]} "
                f"keypoints a person, the model expects {num_k}"
            )
        self.transform = transform
        self.seed, self.epoch, self.repeat = seed, 0, max(int(repeat), 1)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | float]:
        r = self.records[index % len(self.records)]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        s = self.transform(read_image(r.file), r.keypoints, r.box, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(s.image)),
            "heatmaps": torch.from_numpy(s.heatmaps),
            "weights": torch.from_numpy(s.weights),
            "keypoints": torch.from_numpy(s.keypoints.astype(np.float32)),
            "image_id": r.image_id,
            "ann_id": r.ann_id,
            "center": torch.from_numpy(s.center.astype(np.float32)),
            "scale": torch.from_numpy(s.scale.astype(np.float32)),
            "box_score": 1.0,
        }


def worker_init(_: int) -> None:
    """DataLoader worker set-up: one OpenCV thread per worker (the workers are the parallelism)."""
    cv2.setNumThreads(1)


def single_threaded_opencv() -> None:
    """Keep OpenCV's thread pool out of a process that forks DataLoader workers.

    A worker forked after OpenCV ran a parallel loop in the parent (e.g. the evaluation's
    crops) can deadlock on the pool's lock in its first cv2 call; with one thread no pool is
    started. Call it at the start of every entry point that uses loader workers.
    """
    cv2.setNumThreads(1)
