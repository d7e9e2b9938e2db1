"""Service settings: ``HEATPOSE_*`` environment variables and an optional ``.env`` file.

Every field here is one environment variable: ``max_batch_size`` is read from
``HEATPOSE_MAX_BATCH_SIZE``. :func:`load_settings` turns pydantic's validation errors into a
:class:`SettingsError` whose message names the offending variable, so start-up can stop with a
line a human can act on instead of a traceback.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.devices import parse_buckets, parse_devices
from models.runtime.choices import DecodeMode
from models.weights.zoo import DEFAULT_MODEL as DEFAULT_CHECKPOINT

ENV_PREFIX = "HEATPOSE_"
OTHER_VARIABLES = ("HEATPOSE_HOME", "HEATPOSE_WEIGHTS_URL")
"""``HEATPOSE_*`` variables read outside the settings (the weight zoo's cache and mirror)."""


class SettingsError(ValueError):
    """Settings that cannot start the service; the message names each bad variable."""


class Settings(BaseSettings):
    """Everything the service can be told at start-up (see the field descriptions)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        allow_inf_nan=False,  # every number is finite and bounded (tests/app/test_settings.py)
    )

    checkpoint: str = Field(
        DEFAULT_CHECKPOINT,
        description="A .safetensors checkpoint written by models.weights.checkpoint.save, or a zoo "
        "name (fetched and cached under HEATPOSE_HOME on first start). Default: the published DARK "
        "ResNet-50 COCO 256x192 weights.",
    )
    device: str = Field(
        "auto",
        description="auto (cuda if available), cpu, cuda, cuda:N, mps, a comma list "
        "(cuda:0,cuda:1: a model replica and batch worker per device, one shared queue) or all "
        "(every visible CUDA device; the CPU without CUDA). cpu,cpu: two CPU workers.",
    )
    batch_buckets: str = Field(
        "auto",
        description="Pad each forward pass to one of these batch sizes (e.g. 8,16,32) so CUDA "
        "graphs and TensorRT profiles are reused; auto = 8,16,32,... on CUDA, none on the CPU.",
    )
    onnx: str | None = Field(
        None,
        description="With HEATPOSE_BACKEND=onnxruntime: serve this .onnx file (e.g. an INT8 one "
        "from `heatpose export --int8`) instead of exporting the checkpoint; it must be an "
        "export of HEATPOSE_CHECKPOINT (same stored config; INT8 files: same weights).",
    )
    backend: Literal["torch", "onnxruntime", "tensorrt", "compile"] = Field(
        "torch",
        description="Who runs the forward pass (models/runtime/backends.py): torch, onnxruntime "
        "(pip install 'heatpose[onnx]'; CUDA: 'heatpose[gpu]'), tensorrt (CUDA only) or compile.",
    )
    crop: Literal["auto", "cv2", "device"] = Field(
        "auto",
        description="How person crops are cut: cv2 (per person on the CPU), device (all "
        "persons of a request with one batched warp on the first device; the crops stay "
        "there) or auto = device when serving on CUDA, else cv2.",
    )
    decode: Literal["auto", "pillow", "torch"] = Field(
        "auto",
        description="How /predict decodes JPEG uploads: pillow (CPU), torch (torchvision "
        "decode_jpeg on the serving device: nvJPEG on CUDA; full size, other formats and "
        "/visualize stay on Pillow) or auto = torch when the crops are cut on a CUDA device.",
    )
    detector: str = Field(
        "auto",
        description="Person detector for images without boxes: a zoo name (`heatpose weights "
        "list`), a local RTMDet or torchvision weights file (.pth/.safetensors), `none` (the "
        "whole image is one person), or `auto` = person-rtmdet-m on CUDA, person-rtmdet-nano "
        "on CPU.",
    )
    detector_batch_size: int = Field(
        8, ge=1, le=256, description="Images in one person-detector forward pass."
    )
    detector_max_queued_images: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Images waiting for the person detector; beyond it requests get 503.",
    )
    detector_nms_thr: float = Field(
        0.3, ge=0, le=1, description="IoU above which a lower-scored person box is suppressed."
    )
    max_persons: int = Field(
        100, ge=1, le=1000, description="Largest max_persons a request may ask for."
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="Crops in one forward pass.")
    max_queue_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="Longest wait for a batch to fill after its first crop."
    )
    max_queued_persons: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Person crops waiting for the model; beyond it requests get 503.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Deadline of one request, from arrival; then 504."
    )
    max_upload_bytes: int = Field(
        10_000_000,
        ge=1024,
        le=10_000_000_000,
        description="Largest request body in bytes (413 beyond).",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        le=10_000_000_000,
        description="Largest declared width x height of one image (413 beyond).",
    )
    max_request_pixels: int | None = Field(
        None,
        ge=1,
        le=100_000_000_000,
        description="Most declared pixels (all images) decoded for one request (413 beyond); "
        "unset = 2 x HEATPOSE_MAX_IMAGE_PIXELS.",
    )
    max_inflight_pixels: int | None = Field(
        None,
        ge=1,
        le=100_000_000_000,
        description="Most declared pixels being decoded, cropped or rendered at once in the "
        "process; requests wait for room until their deadline. Unset = 2 x "
        "HEATPOSE_MAX_IMAGE_PIXELS.",
    )
    max_render_pixels: int = Field(
        3840 * 2160,
        ge=4096,
        le=10_000_000_000,
        description="/visualize draws a larger image at a reduced size of at most this many "
        "pixels (default 4K UHD).",
    )
    decode_max_side: int = Field(
        2048,
        ge=0,
        le=65_535,
        description="A JPEG whose longer side exceeds this is decoded at 1/2, 1/4 or 1/8 scale "
        "(the largest that keeps the longer side at least this long); answers stay in the "
        "original image's pixels. 0 = always decode at full resolution. The default keeps a "
        "4:3 photo's shorter side >= 1536 px, about twice what the person detector reads "
        "(800 px) and 6x the pose input's height.",
    )
    max_images_per_request: int = Field(
        16, ge=1, le=10_000, description="Most files in one request."
    )
    max_boxes_per_image: int = Field(
        100, ge=1, le=100_000, description="Most person boxes for one image."
    )
    flip_test: bool = Field(True, description="Default of the flip_test query parameter.")
    decode_mode: DecodeMode | None = Field(
        None, description="Default decode mode; unset = the one stored in the checkpoint."
    )
    api_key: SecretStr | None = Field(
        None, description="When set, /predict, /visualize and /v1/model require this key."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed CORS origins: a JSON list or comma-separated."
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    json_logs: bool = Field(False, description="One JSON object per log line.")
    host: str = Field("127.0.0.1", description="Bind address of `python -m app`.")
    port: int = Field(8000, ge=0, le=65535, description="Port of `python -m app`.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes (uvicorn workers), each with its own model and batcher "
        "on the same device; /metrics sums them all.",
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long in-flight requests may take to finish.",
    )
    drain_delay_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="On SIGTERM, /ready turns 503 at once but the listener stays open and "
        "requests are served for this long (for load balancers to notice), then the grace "
        "period starts.",
    )
    body_timeout_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="The request body must have arrived this long after the request began "
        "(408 beyond; slow uploads cannot hold a connection).",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A connection must send a request's complete headers this long after it "
        "opened or its previous answer was sent, else it is closed (slowloris, idle sockets).",
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="An idle keep-alive connection is closed after this."
    )
    max_header_bytes: int = Field(
        32_768,
        ge=4096,
        le=16_777_216,
        description="Largest request line + headers in bytes (431 beyond).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open connections (and running requests) at most; beyond it uvicorn answers "
        "503 at once.",
    )
    metrics_public: bool = Field(
        True, description="false: /metrics needs the API key too (when one is set)."
    )
    warmup: bool = Field(
        True,
        description="Before /ready turns true, run the forward pass at every batch size the "
        "service forms (each batch bucket; compile: 1, 2, 4, ...; app/engine/warmup.py); false: "
        "one pass of one crop only.",
    )
    max_streams: int = Field(
        16, ge=0, le=100_000, description="Most open WS /v1/stream connections; beyond it 1013."
    )
    stream_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="A stream with no message for this long is closed (1000).",
    )
    torch_threads: int | None = Field(
        None, ge=1, le=1024, description="Intra-op threads of torch on CPU; unset = one per core."
    )
    cv2_threads: int = Field(
        1,
        ge=0,
        le=1024,
        description="OpenCV threads for crops, resizes and overlays (cv2.setNumThreads); "
        "1 = in the calling worker thread (requests are already cut in parallel worker "
        "threads); 0 = leave OpenCV's own pool (one thread per core).",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return parse_devices(v)

    @field_validator("batch_buckets")
    @classmethod
    def _buckets(cls, v: str) -> str:
        return parse_buckets(v)

    @field_validator("detector")
    @classmethod
    def _detector(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must be auto, none, a zoo detector name or a weights file")
        return v.lower() if v.lower() in ("auto", "none") else v

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a .safetensors file or a zoo model")
        return v.strip()

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value():
            return None  # HEATPOSE_API_KEY= (empty) means no key
        return v

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                return json.loads(s)
            return [o.strip() for o in s.split(",") if o.strip()]
        return v

    @property
    def request_pixels(self) -> int:
        """``max_request_pixels``, or its default derived from ``max_image_pixels``."""
        return self.max_request_pixels or 2 * self.max_image_pixels

    @property
    def inflight_pixels(self) -> int:
        """``max_inflight_pixels``, or its default derived from ``max_image_pixels``."""
        return self.max_inflight_pixels or 2 * self.max_image_pixels

    @property
    def max_queue_delay_s(self) -> float:
        """``max_queue_delay_ms`` in seconds."""
        return self.max_queue_delay_ms / 1000.0


def describe_validation_error(err: ValidationError) -> str:
    """One line: each problem naming its environment variable (``HEATPOSE_...``), ``; ``
    between problems."""
    lines = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else "?"
        var = ENV_PREFIX + field.upper()
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        msg = "is required but not set" if e["type"] == "missing" else e["msg"]
        lines.append(f"{var}: {msg}{got}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment and ``.env``; ``overrides`` win over both.

    Raises:
        SettingsError: naming each bad ``HEATPOSE_*`` variable and why.
    """
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(describe_validation_error(e)) from None
    except ValueError as e:  # e.g. a malformed JSON list for HEATPOSE_CORS_ORIGINS
        raise SettingsError(f"invalid settings: {e}") from None


def known_variables() -> list[str]:
    """Every ``HEATPOSE_*`` variable the service reads."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields] + list(OTHER_VARIABLES)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``HEATPOSE_*`` variable in ``environ`` that nothing reads (a typo?).

    Returns:
        Lines such as ``unknown variable HEATPOSE_CHECKPIONT is ignored (did you mean
        HEATPOSE_CHECKPOINT?)``, the closest known name by :func:`difflib.get_close_matches`.
    """
    known = known_variables()
    suffixes = [k.removeprefix(ENV_PREFIX) for k in known]  # the shared prefix is no evidence
    lines = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        lines.append(f"unknown variable {name} is ignored{hint}")
    return lines
