"""Checks of a training run's data before its first step: what a loader would otherwise find
mid-epoch (or at the first evaluation) stops the run at once, with one line.

:func:`check_training_data` reads the annotation file of ``--train-split`` (and of
``--val-split`` when the run evaluates) and checks that every image file a sample would be read
from is there: the images with at least one person that is not a crowd and has a labelled
keypoint (what :func:`training.data.coco.person_records` keeps). Missing files are counted and the
first few named. The check only stats files; it does not decode them. A missing or unreadable
annotation file is reported by :func:`training.data.coco.load_coco`'s own message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.data.coco import DataError, annotation_path, load_coco

SHOWN = 5  # missing files named in the message; the count covers all


def _document(data_path: Path, split: str) -> dict[str, Any]:
    """The split's annotation file as JSON; :class:`DataError` naming it when it cannot be read."""
    path = annotation_path(data_path, split)
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        load_coco(data_path, split)  # raises the DataError that names the file (and the splits)
        raise DataError(f"cannot read annotation file {path}: not a COCO JSON object")
    return doc


def _labelled(ann: Any) -> bool:
    """A non-crowd annotation with a keypoint whose visibility flag is > 0 (any array length:
    wrong lengths are reported by the keypoint checks, not here)."""
    if not isinstance(ann, dict) or ann.get("iscrowd", 0):
        return False
    kp = ann.get("keypoints") or []
    return any(isinstance(v, (int, float)) and v > 0 for v in kp[2::3])


def used_image_files(doc: dict[str, Any]) -> list[str]:
    """``file_name`` of each image (in id order) that has a person a sample would be made of."""
    used = {ann.get("image_id") for ann in doc.get("annotations", []) if _labelled(ann)}
    images = [i for i in doc.get("images", []) if isinstance(i, dict) and i.get("id") in used]
    return [str(i.get("file_name")) for i in sorted(images, key=lambda i: i["id"])]


def check_images(data_path: Path, split: str, *, flag: str) -> None:
    """:class:`DataError` listing the split's missing image files (count and first few),
    naming ``flag``, the flag that chose the split."""
    names = used_image_files(_document(data_path, split))
    image_dir = Path(data_path) / split
    where = f"{annotation_path(data_path, split).name} ({flag} {split})"
    if names and not image_dir.is_dir():
        raise DataError(
            f"image directory not found: {image_dir}; {where} has {len(names)} images there "
            "(check --data-path)"
        )
    missing = [n for n in names if not (image_dir / n).is_file()]
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
        raise DataError(
            f"{len(missing)} of the {len(names)} image files of {where} are missing from "
            f"{image_dir}: {shown} (check --data-path)"
        )


def check_training_data(args: Any) -> None:
    """The checks of the module doc for the splits the run reads: ``--train-split`` (unless
    ``--test-only``) and ``--val-split`` when it evaluates (``--eval-every`` > 0 or
    ``--test-only``); :class:`DataError` with one line."""
    if not args.test_only:
        check_images(args.data_path, args.train_split, flag="--train-split")
    evaluates = args.test_only or args.eval_every > 0
    if evaluates and (args.test_only or args.val_split != args.train_split):
        check_images(args.data_path, args.val_split, flag="--val-split")
