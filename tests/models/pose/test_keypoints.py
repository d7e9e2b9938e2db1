"""KeypointSpec: COCO order, flip pairs, serialisation, validation."""

import pytest

from models.pose.keypoints import COCO_KEYPOINTS, KeypointSpec


def test_coco_order_and_size() -> None:
    spec = COCO_KEYPOINTS
    assert spec.num_keypoints == 17
    assert spec.names[0] == "nose" and spec.names[16] == "right_ankle"
    assert len(spec.sigmas) == 17 and spec.sigmas[0] == 0.026
    assert len(spec.skeleton) == 19
    assert set(spec.upper_body) | set(spec.lower_body) == set(range(17))


def test_flipping_twice_is_identity() -> None:
    f = COCO_KEYPOINTS.flip_indices
    assert [f[f[i]] for i in range(17)] == list(range(17))


def test_flip_pairs_map_left_to_matching_right() -> None:
    names = COCO_KEYPOINTS.names
    for i, j in enumerate(COCO_KEYPOINTS.flip_indices):
        if names[i].startswith("left_"):
            assert names[j] == "right_" + names[i][5:]
        elif names[i].startswith("right_"):
            assert names[j] == "left_" + names[i][6:]
        else:
            assert i == j  # the nose maps to itself
    assert COCO_KEYPOINTS.flip_indices[5] == 6  # left_shoulder <-> right_shoulder


def test_dict_round_trip() -> None:
    assert KeypointSpec.from_dict(COCO_KEYPOINTS.to_dict()) == COCO_KEYPOINTS


def test_invalid_specs_are_refused() -> None:
    base = COCO_KEYPOINTS.to_dict()
    with pytest.raises(ValueError, match="involution"):
        KeypointSpec.from_dict({**base, "flip_indices": [1, 2, 0, *range(3, 17)]})
    with pytest.raises(ValueError, match="outside"):
        KeypointSpec.from_dict({**base, "skeleton": [[0, 17]]})
    with pytest.raises(ValueError, match="K entries"):
        KeypointSpec.from_dict({**base, "sigmas": [0.1]})
