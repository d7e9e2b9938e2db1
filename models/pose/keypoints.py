"""Keypoint specifications: names, left/right flip pairs, skeleton links, OKS sigmas.

A :class:`KeypointSpec` is the one place that says what the K heatmap channels mean.
It travels inside every checkpoint (``to_dict``/``from_dict``) so the service and the
evaluator never guess the channel order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KeypointSpec:
    """What the K keypoint channels of a model are.

    Attributes:
        names: K keypoint names, in channel order.
        flip_indices: K indices; channel ``i`` becomes channel ``flip_indices[i]`` when the
            image is mirrored horizontally (left and right swap, centre joints map to themselves).
        skeleton: links as pairs of 0-based channel indices, for drawing.
        sigmas: K per-keypoint OKS constants (COCO's ``kpt_oks_sigmas``).
        upper_body: channel indices of the upper body (used by half-body augmentation).
        lower_body: channel indices of the lower body.
        category: what the model finds, in the singular (the COCO category's name: ``person``,
            ``animal``); answers and the demo page label persons with it.
    """

    names: tuple[str, ...]
    flip_indices: tuple[int, ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    upper_body: tuple[int, ...]
    lower_body: tuple[int, ...]
    category: str = "person"

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(self.flip_indices) != k or len(self.sigmas) != k:
            raise ValueError("names, flip_indices and sigmas must all have K entries")
        if sorted(self.flip_indices) != list(range(k)):
            raise ValueError("flip_indices must be a permutation of range(K)")
        if any(self.flip_indices[j] != i for i, j in enumerate(self.flip_indices)):
            raise ValueError("flip_indices must be an involution (flipping twice is the identity)")
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"skeleton link ({a}, {b}) names a channel outside 0..{k - 1}")

    @property
    def num_keypoints(self) -> int:
        """K, the number of keypoint channels."""
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, not tuples)."""
        return {
            "names": list(self.names),
            "flip_indices": list(self.flip_indices),
            "skeleton": [list(link) for link in self.skeleton],
            "sigmas": list(self.sigmas),
            "upper_body": list(self.upper_body),
            "lower_body": list(self.lower_body),
            "category": self.category,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeypointSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            names=tuple(d["names"]),
            flip_indices=tuple(int(i) for i in d["flip_indices"]),
            skeleton=tuple((int(a), int(b)) for a, b in d["skeleton"]),
            sigmas=tuple(float(s) for s in d["sigmas"]),
            upper_body=tuple(int(i) for i in d["upper_body"]),
            lower_body=tuple(int(i) for i in d["lower_body"]),
            category=str(d.get("category", "person")),  # files before the field: persons
        )


_COCO_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)


def _flip_indices(names: tuple[str, ...]) -> tuple[int, ...]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for n in names:
        if n.startswith("left_"):
            out.append(index["right_" + n[5:]])
        elif n.startswith("right_"):
            out.append(index["left_" + n[6:]])
        else:
            out.append(index[n])
    return tuple(out)


# COCO's own skeleton (person_keypoints categories), converted to 0-based indices.
_LEGS_AND_TORSO = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13))
_ARMS = ((6, 7), (6, 8), (7, 9), (8, 10), (9, 11))
_HEAD = ((2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
_COCO_SKELETON_1BASED = (*_LEGS_AND_TORSO, *_ARMS, *_HEAD)

# OKS sigmas in keypoint order: face (5), shoulders, elbows, wrists, then hips, knees, ankles.
_FACE_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035)
_ARM_SIGMAS = (0.079, 0.079, 0.072, 0.072, 0.062, 0.062)
_LEG_SIGMAS = (0.107, 0.107, 0.087, 0.087, 0.089, 0.089)
_COCO_SIGMAS = (*_FACE_SIGMAS, *_ARM_SIGMAS, *_LEG_SIGMAS)

COCO_KEYPOINTS = KeypointSpec(
    names=_COCO_NAMES,
    flip_indices=_flip_indices(_COCO_NAMES),
    skeleton=tuple((a - 1, b - 1) for a, b in _COCO_SKELETON_1BASED),
    sigmas=_COCO_SIGMAS,
    upper_body=tuple(range(0, 11)),
    lower_body=tuple(range(11, 17)),
)
"""The 17 COCO person keypoints in COCO order, with COCO's skeleton and OKS sigmas."""
