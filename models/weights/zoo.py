"""The weight zoo: named published checkpoints, downloaded, verified and converted once.

``fetch`` downloads a published ``.pth`` to ``<home>/downloads/<file>.part`` (resuming with HTTP
Range requests), checks that its sha256 starts with the published prefix *before* anything
reads it, and converts it to ``<home>/<name>.safetensors``: a pose model with
:func:`models.weights.checkpoint.import_published`, a person detector's state dict (torchvision's,
or the ``state_dict`` of mmdet's RTMDet checkpoint) with
:func:`models.weights.checkpoint.save_state_dict` (tensors as published, arch and source in the
header). ``<home>`` is ``HEATPOSE_HOME`` (default ``~/.cache/heatpose``);
``HEATPOSE_WEIGHTS_URL`` replaces the download base URL (mirrors, tests).
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

MMPOSE_COCO_URL = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco"
TORCHVISION_URL = "https://download.pytorch.org/models"
RTMPOSE_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmpose"
SYNTH_RECIPE = (
    "heatpose synth --out data/synth2k --train 2400 --val 300 --seed 0",
    "heatpose train --data-path data/synth2k --train-split train --val-split val --depth 18 "
    "--input-size 128x96 -b 16 -j 1 --epochs 10 --lr 1e-3 --lr-steps 8 --warmup-iters 200 "
    "--rotate-factor 30 --scale-range 0.75 1.25 --pretrained-backbone none --eval-every 1 "
    "--output-dir outputs/synth_r18",
)
"""The README's no-download recipe (about 17 minutes on 2 CPU cores), as the hints print it."""
OFFLINE_HINT = (
    "to run without downloading, give a local .safetensors file instead, or convert a .pth "
    "you have with `heatpose weights import FILE --out X.safetensors`, or train one on synthetic "
    f"data (`{SYNTH_RECIPE[0]}`, then `{SYNTH_RECIPE[1]}`: "
    "outputs/synth_r18/best.safetensors); or point HEATPOSE_WEIGHTS_URL at a mirror holding the "
    "published files"
)
DETECTOR_OFFLINE_HINT = (
    "to run without downloading, give the detector's weights as a local file instead: a "
    "torchvision or RTMDet state dict (.pth or .safetensors, e.g. the published file copied "
    "from a machine that has it), or put it under HEATPOSE_HOME with `heatpose weights fetch "
    "NAME` on a mirror (HEATPOSE_WEIGHTS_URL)"
)
KINDS = ("pose", "detector")


class ZooError(RuntimeError):
    """A zoo name is unknown or its weights cannot be obtained; the message says what to do."""


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint.

    Attributes:
        name: the zoo name (``res50-coco-256x192``).
        filename: the published file name; the URL is ``<base_url>/<filename>``.
        sha256_prefix: the hex digits the file's sha256 must start with (mmpose's and
            torchvision's file names carry the first 8).
        coco_val_ap: the published COCO val2017 AP: keypoint AP of a pose model, box AP of a
            detector (torchvision's ``box_map``).
        decode_mode: the decode a pose model was published with (``shift`` or ``dark``);
            ``""`` for a detector.
        layout: ``mmpose`` or ``simplebaselines`` (sets the colour order: RGB or BGR);
            ``torchvision`` or ``mmdet`` (RTMDet) for a detector.
        base_url: where the file lives; ``HEATPOSE_WEIGHTS_URL`` or ``fetch(base_url=)`` win.
        kind: ``pose`` or ``detector``.
        arch: a detector's architecture (:data:`models.detection.detector.ARCHS`); ``None`` for
        pose. gflops: published compute of one forward pass (torchvision's ``_ops``, mmpose's
            FLOPS column), if known.
        input_size: a fixed-input detector's square input side (RTMDet), px; else ``None``.
    """

    name: str
    filename: str
    sha256_prefix: str
    coco_val_ap: float
    decode_mode: str = ""
    layout: str = "mmpose"
    base_url: str = MMPOSE_COCO_URL
    kind: str = "pose"
    arch: str | None = None
    gflops: float | None = None
    input_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS or (self.kind == "detector") != (self.arch is not None):
            raise ValueError(f"zoo entry {self.name}: kind {self.kind!r}, arch {self.arch!r}")


ENTRIES: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            name="res50-coco-256x192",
            filename="td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth",
            sha256_prefix="04af38ce",
            coco_val_ap=0.718,
            decode_mode="shift",  # mmpose's MSRAHeatmap without `unbiased`: quarter-pixel shift
        ),
        ZooEntry(
            name="res50-dark-coco-256x192",
            filename="td-hm_res50_dark-8xb64-210e_coco-256x192-c129dcb6_20220926.pth",
            sha256_prefix="c129dcb6",
            coco_val_ap=0.724,
            decode_mode="dark",
        ),
        # torchvision's COCO_V1 weights (url, box_map, _ops of the weight enums)
        ZooEntry(
            name="person-rcnn-r50-fpn",
            filename="keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
            sha256_prefix="fc266e95",
            coco_val_ap=0.546,  # person box AP (the model knows persons only)
            layout="torchvision",
            base_url=TORCHVISION_URL,
            kind="detector",
            arch="person-rcnn-r50-fpn",
            gflops=137.42,
        ),
        ZooEntry(
            name="person-frcnn-mbv3",
            filename="fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
            sha256_prefix="fb6a3cc7",
            coco_val_ap=0.328,  # box AP over the 80 COCO classes
            layout="torchvision",
            base_url=TORCHVISION_URL,
            kind="detector",
            arch="person-frcnn-mbv3",
            gflops=4.494,
        ),
        # mmpose's person-only RTMDet (projects/rtmpose/README.md: person AP, params, FLOPS)
        ZooEntry(
            name="person-rtmdet-nano",
            filename="rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
            sha256_prefix="05d8511e",
            coco_val_ap=0.403,  # COCO person box AP
            layout="mmdet",
            base_url=RTMPOSE_URL,
            kind="detector",
            arch="person-rtmdet-nano",
            gflops=0.31,
            input_size=320,
        ),
        ZooEntry(
            name="person-rtmdet-m",
            filename="rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth",
            sha256_prefix="235e8209",
            coco_val_ap=0.625,
            layout="mmdet",
            base_url=RTMPOSE_URL,
            kind="detector",
            arch="person-rtmdet-m",
            gflops=38.95,
            input_size=640,
        ),
    )
}
"""The published weights heatpose serves as-is (mmpose 1.x COCO files), by zoo name."""

DEFAULT_MODEL = "res50-dark-coco-256x192"
"""What the service serves when no checkpoint is named: the most accurate published entry."""


def list_entries(entries: Mapping[str, ZooEntry] | None = None) -> list[ZooEntry]:
    """The zoo's entries, in table order."""
    return list((ENTRIES if entries is None else entries).values())


def heatpose_home(home: str | Path | None = None) -> Path:
    """``home``, else ``HEATPOSE_HOME``, else ``~/.cache/heatpose``."""
    return Path(home or os.environ.get("HEATPOSE_HOME") or "~/.cache/heatpose").expanduser()


def _entry(name: str, entries: Mapping[str, ZooEntry] | None) -> ZooEntry:
    table = ENTRIES if entries is None else entries
    if name not in table:
        raise ZooError(f"unknown zoo name {name!r}; known: {', '.join(table)}")
    return table[name]


def _download_once(url: str, part: Path, progress: bool, hint: str = OFFLINE_HINT) -> bool:
    """Append the rest of ``url`` to ``part``; True when the file is complete.

    Sends ``Range: bytes=<size of part>-`` when ``part`` exists; restarts from zero if the
    server ignores it. Returns False when the connection ended early (``part`` keeps what came).

    Raises:
        ZooError: the server cannot be reached or answers with an HTTP error.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "heatpose"} | ({"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part is complete
            return True
        raise ZooError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except OSError as e:  # URLError (refused, unknown host, ...) is an OSError
        reason = getattr(e, "reason", e)
        raise ZooError(f"cannot download {url} ({reason}); {hint}") from e
    with response:
        if offset and response.status != 206:
            offset = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        desc = part.name.removesuffix(".part")
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=desc,
            file=sys.stderr,
            disable=not progress,
        )
        with bar, part.open("ab" if offset else "wb") as f:
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                return False  # connection reset / incomplete read: resume from what came
    return total is None or received >= total


def _download(url: str, part: Path, progress: bool, hint: str, attempts: int = 3) -> None:
    """Download ``url`` into ``part``, resuming after broken connections."""
    for _ in range(attempts):
        if _download_once(url, part, progress, hint):
            return
    raise ZooError(
        f"the download of {url} broke off {attempts} times; run the same command again to "
        f"resume from {part.stat().st_size if part.exists() else 0} bytes"
    )


def fetch(
    name: str,
    home: str | Path | None = None,
    base_url: str | None = None,
    progress: bool = True,
    *,
    force: bool = False,
    entries: Mapping[str, ZooEntry] | None = None,
) -> Path:
    """Download, verify and convert the zoo entry ``name``; returns ``<home>/<name>.safetensors``.

    A cached artifact is returned as is unless ``force``. The download is checked against the
    entry's sha256 prefix before it is read; a mismatch deletes it and raises, caching nothing.
    ``base_url`` (else ``HEATPOSE_WEIGHTS_URL``, else the entry's) is where files are fetched.
    ``entries`` replaces the built-in table (tests, private zoos).

    Raises:
        ZooError: unknown name, download failure, or a file that is not the published one.
    """
    entry = _entry(name, entries)
    root = heatpose_home(home)
    dst = root / f"{entry.name}.safetensors"
    if dst.is_file() and not force:
        return dst
    # here, not at the top: `heatpose weights list` and app.settings stay torch-free
    from models.weights.checkpoint import (
        CheckpointError,
        file_sha256,
        import_published,
        read_state_dict,
        save_state_dict,
    )

    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    base = base_url or os.environ.get("HEATPOSE_WEIGHTS_URL") or entry.base_url
    url = f"{base.rstrip('/')}/{entry.filename}"
    part = downloads / f"{entry.filename}.part"
    detector = entry.kind == "detector"
    _download(url, part, progress, DETECTOR_OFFLINE_HINT if detector else OFFLINE_HINT)
    digest = file_sha256(part)
    if not digest.startswith(entry.sha256_prefix.lower()):
        part.unlink()
        raise ZooError(
            f"{entry.filename} from {url} has sha256 {digest[:16]}..., but the published file's "
            f"starts with {entry.sha256_prefix}: it is corrupt or not the published file. "
            "Deleted it, nothing was cached; retry, or check HEATPOSE_WEIGHTS_URL"
        )
    verified = downloads / entry.filename
    os.replace(part, verified)
    try:
        if detector:
            source = {"arch": entry.arch, "url": url, "sha256": digest, "zoo_name": entry.name}
            save_state_dict(dst, read_state_dict(verified), source)
        else:
            import_published(
                verified,
                dst,
                layout=entry.layout,
                name=entry.name,
                decode_mode=entry.decode_mode,
                metrics={"coco_val_ap": entry.coco_val_ap},
                provenance={"url": url, "zoo_name": entry.name},
            )
    except CheckpointError as e:
        raise ZooError(f"converting {verified} failed: {e}") from e
    verified.unlink()  # the artifact holds everything; its provenance keeps the sha256
    return dst


def resolve(
    name_or_path: str | Path,
    home: str | Path | None = None,
    *,
    progress: bool = True,
    entries: Mapping[str, ZooEntry] | None = None,
    kind: str | None = None,
) -> Path:
    """A checkpoint path: an existing file as is; a zoo name -> its cached artifact, fetched once.

    ``kind`` (``pose`` | ``detector``) limits the names to that kind's entries.

    Raises:
        ZooError: neither a file nor a zoo name, or the weights cannot be downloaded; the
            message says how to provide a checkpoint instead.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    table = ENTRIES if entries is None else entries
    table = {k: e for k, e in table.items() if kind in (None, e.kind)}
    name = str(name_or_path)
    if name not in table:
        hint = DETECTOR_OFFLINE_HINT if kind == "detector" else OFFLINE_HINT
        raise ZooError(
            f"{name!r} is neither an existing file nor a zoo name ({', '.join(table)}); {hint}"
        )
    return fetch(name, home=home, progress=progress, entries=table)
