"""The keypoint spec of a training run, read from the data set's category.

The names and skeleton come from the annotation file's keypoint category (``--category`` when it
has several; ``person`` when present). What a COCO category does not say is filled in here:

- flip pairs, inferred from the usual naming conventions (``left_x``/``right_x``, ``l_x``/``r_x``,
  ``x_left``/``x_right``, ``LeftX``/``RightX``; case-insensitive), or ``--flip-pairs FILE``;
  with no pairs, horizontal flip augmentation is turned off;
- OKS sigmas: COCO's for COCO's keypoint names, ``--oks-sigmas FILE`` (JSON name -> sigma) for
  any name, ``--default-sigma`` for the rest;
- half-body groups, inferred from body-part words in the names (``front``/``back`` legs of
  animals, head and arms vs hips and legs of people), or ``--upper-body FILE``; else half-body
  augmentation is turned off with a warning.

A category whose keypoint count does not match its annotations' arrays stops the run before
training with one line naming the first bad annotation id. Errors are
:class:`training.data.coco.DataError` whose message names the flag or file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.weights.checkpoint import read_config
from models.pose.keypoints import COCO_KEYPOINTS, KeypointSpec
from training.data.coco import DataError, annotation_path, require_annotation_file

COCO_SIGMAS = dict(zip(COCO_KEYPOINTS.names, COCO_KEYPOINTS.sigmas, strict=True))

_SEP = re.compile(r"([_\-\s.]+)")
_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l"}
_FRONT = {"front", "fore", "forelimb", "anterior"}
_HIND = {"back", "hind", "rear", "posterior", "hindlimb"}
_UPPER = (
    {"nose", "eye", "ear", "head", "neck", "mouth", "chin", "jaw", "throat", "face", "forehead"}
    | {"shoulder", "elbow", "wrist", "hand", "finger", "thumb", "palm", "arm", "forearm", "chest"}
    | {"withers", "muzzle", "snout", "lip", "cheek", "brow", "eyebrow", "horn", "antler", "beak"}
    | {"crown", "wing"}
)
_LOWER = {
    "hip",
    "knee",
    "ankle",
    "foot",
    "feet",
    "heel",
    "toe",
    "tail",
    "pelvis",
    "hock",
    "rump",
} | {"thigh", "leg", "shin", "stifle", "croup", "buttock"}


def _swapped_names(name: str) -> list[str]:
    """Lower-case names ``name`` would have on the other side, by the naming conventions."""
    parts = _SEP.split(name.lower())
    words = range(0, len(parts), 2)  # separators sit at the odd indices
    out = []
    for i in words:
        w = parts[i]
        edge = i in (0, len(parts) - 1) and len(parts) > 1
        if w in ("left", "right") or (w in ("l", "r") and edge):
            out.append("".join([*parts[:i], _SIDES[w], *parts[i + 1 :]]))
        for side, other in (("left", "right"), ("right", "left")):
            if w != side and w.startswith(side):
                out.append("".join([*parts[:i], other + w[len(side) :], *parts[i + 1 :]]))
            if w != side and w.endswith(side):
                out.append("".join([*parts[:i], w[: -len(side)] + other, *parts[i + 1 :]]))
    return out


def infer_flip_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """Left/right pairs ``(i, j)`` (channel indices, ``i < j``) found by the naming conventions."""
    index = {n.lower(): i for i, n in reversed(list(enumerate(names)))}
    partner: dict[int, int] = {}
    for i, name in enumerate(names):
        for other in _swapped_names(name):
            j = index.get(other)
            if j is not None and j != i and i not in partner and j not in partner:
                partner[i], partner[j] = j, i
                break
    return sorted((i, j) for i, j in partner.items() if i < j)


def flip_indices(num_keypoints: int, pairs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The K-entry flip permutation of ``pairs`` (other channels map to themselves)."""
    out = list(range(num_keypoints))
    for i, j in pairs:
        out[i], out[j] = j, i
    return tuple(out)


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()
    return {re.sub(r"\d+$", "", w) for w in re.split(r"[^a-z0-9]+", spaced) if w}


def infer_body_halves(names: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Upper and lower half (channel indices) from body-part words in the names, or ``None``
    when either half would have fewer than 2 keypoints. ``front``/``back`` (legs of animals)
    decide before joint words; names without a known word belong to neither half."""
    upper: list[int] = []
    lower: list[int] = []
    for i, name in enumerate(names):
        words = _words(name)
        for group, vocabulary in (
            (upper, _FRONT),
            (lower, _HIND),
            (upper, _UPPER),
            (lower, _LOWER),
        ):
            if words & vocabulary:
                group.append(i)
                break
    return (tuple(upper), tuple(lower)) if len(upper) >= 2 and len(lower) >= 2 else None


def _read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{flag} {path}: cannot read it as JSON ({e})") from e


def _indices(names: Sequence[str], wanted: Any, flag: str, path: Path) -> list[int]:
    if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
        raise DataError(f"{flag} {path}: expected a JSON list of keypoint names")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise DataError(f"{flag} {path}: {unknown[0]!r} is not a keypoint of the category")
    return [names.index(n) for n in wanted]


def pairs_from_file(names: Sequence[str], path: Path) -> list[tuple[int, int]]:
    """``--flip-pairs FILE``: a JSON list of name pairs, ``[["l_eye", "r_eye"], ...]``."""
    doc = _read_json(path, "--flip-pairs")
    if not isinstance(doc, list) or not all(isinstance(p, list) and len(p) == 2 for p in doc):
        raise DataError(f"--flip-pairs {path}: expected a JSON list of [name, name] pairs")
    pairs = [tuple(_indices(names, p, "--flip-pairs", path)) for p in doc]
    used = [i for p in pairs for i in p]
    if len(set(used)) != len(used):
        twice = next(names[i] for i in used if used.count(i) > 1)
        raise DataError(f"--flip-pairs {path}: {twice!r} is in more than one pair or pairs itself")
    return [(min(p), max(p)) for p in pairs]


def sigmas_for(
    names: Sequence[str], path: Path | None, default: float
) -> tuple[tuple[float, ...], dict[str, list[str]]]:
    """Per-keypoint OKS sigmas and where each came from (``{"file"|"COCO"|"default": names}``)."""
    given: dict[str, Any] = {}
    if path is not None:
        given = _read_json(path, "--oks-sigmas")
        if not isinstance(given, dict):
            raise DataError(f"--oks-sigmas {path}: expected a JSON object name -> sigma")
        _indices(names, list(given), "--oks-sigmas", path)
        bad = [n for n, v in given.items() if not isinstance(v, (int, float)) or not v > 0]
        if bad:
            raise DataError(f"--oks-sigmas {path}: the sigma of {bad[0]!r} is not a number > 0")
    out: list[float] = []
    source: dict[str, list[str]] = {"file": [], "COCO": [], "default": []}
    for n in names:
        kind = "file" if n in given else "COCO" if n in COCO_SIGMAS else "default"
        out.append(float(given.get(n, COCO_SIGMAS.get(n, default))))
        source[kind].append(n)
    return tuple(out), source


def select_category(doc: dict[str, Any], wanted: str | None, path: Path) -> dict[str, Any]:
    """The keypoint category of an annotation file: ``wanted`` (name or id), else ``person``
    when present, else the only one."""
    cats = [c for c in doc.get("categories", []) if c.get("keypoints")]
    listing = ", ".join(f"{c.get('name')!r} (id {c.get('id')})" for c in cats)
    if not cats:
        raise DataError(f"{path} has no category with keypoint names ('keypoints' list)")
    if wanted is not None:
        found = [c for c in cats if str(c.get("id")) == wanted or c.get("name") == wanted]
        if not found:
            raise DataError(
                f"--category {wanted!r} is not a keypoint category of {path}: {listing}"
            )
        return found[0]
    person = [c for c in cats if c.get("name") == "person"]
    if person or len(cats) == 1:
        return (person or cats)[0]
    raise DataError(f"{path} has several keypoint categories ({listing}); choose with --category")


def check_annotations(doc: dict[str, Any], category: dict[str, Any], path: Path) -> None:
    """Stop when an annotation of ``category`` has a keypoint array of the wrong length."""
    k = len(category["keypoints"])
    for ann in doc.get("annotations", []):
        if ann.get("category_id") != category["id"] or "keypoints" not in ann:
            continue
        n = len(ann["keypoints"])
        if n != 3 * k:
            raise DataError(
                f"{path}: annotation id {ann.get('id')} has {n} keypoint values but category "
                f"{category['name']!r} (id {category['id']}) has {k} keypoints ({3 * k} values "
                "x, y, v expected); fix the category's 'keypoints' or the annotations"
            )


def _skeleton(category: dict[str, Any], path: Path) -> tuple[tuple[int, int], ...]:
    k = len(category["keypoints"])
    links = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton") or ())
    for a, b in links:
        if not (0 <= a < k and 0 <= b < k):
            raise DataError(
                f"{path}: category {category['name']!r} has a skeleton link ({a + 1}, {b + 1}) "
                f"outside its keypoints 1..{k}"
            )
    return links


def spec_for_training(args: Any, *, say: Callable[[str], None] = print) -> KeypointSpec:
    """The :class:`KeypointSpec` of the training data, from the flags (see the module doc).

    Reads ``--data-path``'s train annotation file (and checks the val file when there is one;
    ``--test-only`` reads the val file, or takes ``--weights``' own spec),
    prints what it decided through ``say`` and turns ``args.flip_prob`` / ``args.half_body_prob``
    to 0 when the keypoints have no flip pairs / body halves.
    """
    if args.test_only and args.weights is not None:  # evaluation only: the model's own spec
        return read_config(args.weights).spec
    split = args.val_split if args.test_only else args.train_split
    path = require_annotation_file(args.data_path, split)
    doc = _read_json(path, "--data-path")
    if not doc:
        raise DataError(f"annotation file is empty: {path}")
    category = select_category(doc, getattr(args, "category", None), path)
    check_annotations(doc, category, path)
    val = annotation_path(args.data_path, args.val_split)
    if val.is_file() and val != path:
        val_doc = _read_json(val, "--data-path")
        same = [
            c for c in val_doc.get("categories", []) if c.get("keypoints") == category["keypoints"]
        ]
        if not same:
            raise DataError(f"{val} has no category with the keypoints of {category['name']!r}")
        check_annotations(val_doc, same[0], val)
    names = tuple(str(n) for n in category["keypoints"])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{path}: category {category['name']!r} names {twice[0]!r} twice")
    skeleton = _skeleton(category, path)
    say(
        f"keypoints: category {category['name']!r} (id {category['id']}) of {path}, "
        f"{len(names)}: {', '.join(names)}"
    )
    if args.flip_pairs is not None:
        pairs, origin = pairs_from_file(names, args.flip_pairs), f"--flip-pairs {args.flip_pairs}"
    else:
        pairs, origin = infer_flip_pairs(names), "inferred from the names"
    if pairs:
        shown = ", ".join(f"{names[i]}<->{names[j]}" for i, j in pairs)
        say(f"flip pairs ({origin}): {shown}")
    elif args.flip_prob > 0:
        say(
            f"flip pairs ({origin}): none, so horizontal flip augmentation is off "
            "(--flip-pairs FILE gives them)"
        )
        args.flip_prob = 0.0
    sigmas, source = sigmas_for(names, args.oks_sigmas, args.default_sigma)
    parts = {
        "file": f"from --oks-sigmas {args.oks_sigmas}",
        "COCO": "COCO's",
        "default": f"--default-sigma {args.default_sigma}",
    }
    say(
        "OKS sigmas: " + "; ".join(f"{parts[k]} for {', '.join(v)}" for k, v in source.items() if v)
    )
    if args.upper_body is not None:
        upper = tuple(
            _indices(
                names, _read_json(args.upper_body, "--upper-body"), "--upper-body", args.upper_body
            )
        )
        halves: tuple | None = (upper, tuple(i for i in range(len(names)) if i not in upper))
        origin = f"--upper-body {args.upper_body}"
    else:
        halves, origin = infer_body_halves(names), "inferred from the names"
    if halves is not None:
        say(
            f"half-body groups ({origin}): upper {', '.join(names[i] for i in halves[0])}; "
            f"lower {', '.join(names[i] for i in halves[1])}"
        )
    elif args.half_body_prob > 0:
        say(
            "warning: no upper/lower body groups could be inferred from the names, so half-body "
            "augmentation is off (--upper-body FILE gives them)"
        )
        args.half_body_prob = 0.0
    upper_body, lower_body = halves or ((), ())
    spec = KeypointSpec(
        names,
        flip_indices(len(names), pairs),
        skeleton,
        sigmas,
        upper_body,
        lower_body,
        category=str(category["name"]),
    )
    return COCO_KEYPOINTS if spec == COCO_KEYPOINTS else spec
