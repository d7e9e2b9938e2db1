"""Response models (they are the OpenAPI schema of the service).

All coordinates are ``(x, y)`` pixels of the uploaded image *as displayed*, i.e. after its EXIF
orientation has been applied; ``width``/``height`` are that oriented size.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from models.pose.codec import DecodeMode


class Size(BaseModel):
    """A size in pixels."""

    width: int
    height: int


class ModelSummary(BaseModel):
    """Which model answered, and how to read its keypoints."""

    name: str
    category: str = Field(
        "person", description="What the model finds, singular (its data set's category name)."
    )
    keypoints: list[str] = Field(description="Keypoint names in channel order (K).")
    skeleton: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        description="Links as pairs of 0-based keypoint indices."
    )
    input_size: Size = Field(description="Crop size the network sees.")
    flip_test: bool = Field(description="Whether flip-test averaging was used.")
    decode: DecodeMode = Field(description="Heatmap decode mode used.")
    detection_off: str | None = Field(
        None,
        description="Set when the service has no person detector: why, and how to send boxes "
        "instead (images without boxes are answered as one whole-image person); null with one.",
    )


class Keypoint(BaseModel):
    """One keypoint: image pixels and its heatmap maximum as a confidence."""

    name: str
    x: float
    y: float
    score: float
    visible: bool = Field(description="score >= the request's kpt_thr and (x, y) inside the image.")


class Heatmaps(BaseModel):
    """Raw heatmaps of one person: little-endian float32 ``(K, H, W)``, base64-encoded."""

    shape: list[int] = Field(min_length=3, max_length=3, description="[K, H, W]")
    dtype: Literal["float32"] = "float32"
    encoding: Literal["base64"] = "base64"
    data: str


class Person(BaseModel):
    """One person: the box it was cropped from and its K keypoints."""

    bbox: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x1, y1, x2, y2] in image pixels (given, detected, or the whole image).",
    )
    bbox_score: float | None = Field(
        description="The person detector's confidence; null when the box was not detected."
    )
    bbox_source: Literal["client", "detector", "image"] = Field(
        description="Where the box came from: the request, the person detector, the whole image."
    )
    score: float = Field(description="Mean keypoint score.")
    keypoints: list[Keypoint]
    heatmaps: Heatmaps | None = Field(None, description="Only with ?heatmaps=true.")


class ImageResult(BaseModel):
    """The persons found in one uploaded file."""

    filename: str
    width: int = Field(description="Width of the oriented image, pixels.")
    height: int = Field(description="Height of the oriented image, pixels.")
    persons: list[Person]


class Timing(BaseModel):
    """Where the time of this request went, milliseconds."""

    total_ms: float
    decode_ms: float = Field(description="Reading and decoding the images.")
    inference_ms: float = Field(
        description="Cropping the persons, waiting in the batch queue, and the model."
    )


class PredictResponse(BaseModel):
    """Answer of ``POST /predict``."""

    model: ModelSummary
    images: list[ImageResult]
    timing: Timing


class Health(BaseModel):
    """``GET /health``: the process is up."""

    status: Literal["ok"] = "ok"
    details: dict[str, str] | None = Field(
        default=None,
        description="Only when the service runs degraded, what and why, e.g. `detector`: "
        "HEATPOSE_DETECTOR=auto's weights could not be had, so person detection is off.",
    )


class Ready(BaseModel):
    """``GET /ready`` when ready (otherwise a 503 error envelope)."""

    ready: Literal[True] = True
    model: str
    device: str


class ModelMetadata(BaseModel):
    """``GET /v1/model``: the checkpoint's own metadata plus how it is served."""

    name: str
    format_version: int
    architecture: dict[str, Any]
    keypoints: dict[str, Any] = Field(description="KeypointSpec: names, flip pairs, skeleton.")
    codec: dict[str, Any]
    color_order: str
    mean: list[float]
    std: list[float]
    decode_mode: str
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    input_size: list[int] = Field(
        min_length=2, max_length=2, description="[width, height] of the network input."
    )
    heatmap_size: list[int] = Field(
        min_length=2, max_length=2, description="[width, height] of the heatmaps."
    )
    checkpoint: str
    device: str
    flip_test_default: bool
    decode_mode_default: str
    detector: str | None = Field(
        description="The person detector and its weights; null: images without boxes are one "
        "whole-image person."
    )
    features: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per optional acceleration (decode, crop, backend, amp) its setting, state "
        "(on; off = the start-up self-check turned it off and the plain path serves; unused) "
        "and what the self-check saw.",
    )
    detector_off: str | None = Field(
        None, description="Without a person detector: why, and how to send boxes instead."
    )
    backend: str = Field("torch", description="Who runs the forward pass (HEATPOSE_BACKEND).")
    onnx_sha256: str | None = Field(
        None,
        description="sha256 of the .onnx file the backend runs (HEATPOSE_ONNX or the cached "
        "export); null: none (torch, compile).",
    )
