"""The self-check's verdict per optional acceleration (:mod:`app.engine.selfcheck` explains the
rules).

:func:`check_features` runs the built-in request (:mod:`app.engine.selfcheck_request`) on the plain
path, then each acceleration the settings use on its own against it, then the configured
path end to end, and returns a :class:`Check` per row with what the service must serve with:
the effective settings (``HEATPOSE_DECODE`` / ``HEATPOSE_CROP`` resolved) and
:meth:`Verdicts.apply` for each predictor (plain forward, AMP off).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from app.engine.selfcheck_request import RequestPath, builtin_request, pixel_difference, plain_twin
from app.engine.selfcheck_rows import AMP_SETTING, FEATURE_INFO, Check, setting_of
from app.intake.device_path import crops_on_device, decodes_with_torch
from app.settings import Settings
from models.inference.agreement import (
    FLOAT32_FORWARD,
    HALF_FORWARD,
    NVJPEG,
    QUANTIZED,
    REQUEST_PATH,
    Run,
    Tolerance,
    compare,
)
from models.inference.pipeline import Detector
from models.inference.predictor import Predictor
from models.pose.persons import PersonBoxes
from models.runtime.backends import Bucketed, TorchBackend

PIXEL_TOLERANCE = 1.5
"""Mean |difference| of decoded pixels, grey levels (the nvJPEG ``gpu`` test's tolerance)."""


@dataclass
class Verdicts:
    """The rows, and what the service serves with after them."""

    checks: list[Check]
    settings: Settings

    def state(self, feature: str) -> str:
        return next((c.state for c in self.checks if c.feature == feature), "unused")

    def apply(self, predictor: Predictor) -> None:
        """Turn off, in place, what fell back: the backend (plain torch forward) and AMP."""
        if self.state("backend") == "off":
            predictor.forward = TorchBackend(predictor.model)
        if self.state("amp") == "off":
            predictor.amp = False


def _loosest(tolerances: list[Tolerance]) -> Tolerance:
    """Each measure at its largest; unjudged where any of them does not judge it."""

    def most(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else max(v for v in values if v is not None)

    return Tolerance(
        px=most([t.px for t in tolerances]),
        score=most([t.score for t in tolerances]),
        heatmap=most([t.heatmap for t in tolerances]),
    )


def _forward_tolerance(predictor: Predictor, settings: Settings) -> Tolerance:
    """The backend row's tolerance: a given ONNX file (maybe INT8) QUANTIZED; TensorRT (fp16)
    HALF_FORWARD; on CUDA with TF32 convolutions (PyTorch's default; fp16's 10-bit mantissa,
    and a batch bucket may pick another algorithm than the plain batch) HALF_FORWARD too;
    else FLOAT32_FORWARD."""
    if settings.onnx is not None:
        return QUANTIZED
    tf32 = predictor.device.type == "cuda" and torch.backends.cudnn.allow_tf32
    return HALF_FORWARD if predictor.forward.name == "tensorrt" or tf32 else FLOAT32_FORWARD


def check_features(
    predictor: Predictor,
    detector: Detector | None,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> Verdicts:
    """Every row (see the module docstring); never raises: an error is a row's answer."""
    return _Checker(predictor, detector, settings, clock).run()


class _Checker:
    """One self-check: the reference run, then each feature, then the configured path."""

    ref: Run  # the plain path's output
    images: list[np.ndarray]  # the built-in request decoded by Pillow
    persons: list[PersonBoxes]  # their person boxes (client, detector or whole image)

    def __init__(
        self,
        predictor: Predictor,
        detector: Detector | None,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.predictor, self.detector, self.settings, self.clock = (
            predictor,
            detector,
            settings,
            clock,
        )
        self.device = predictor.device
        self.path = RequestPath(
            builtin_request(),
            flip_test=predictor.flip_test,
            decode_mode=predictor.decode_mode,
            detector=detector,
            nms_thr=settings.detector_nms_thr,
        )
        self.plain = plain_twin(predictor)
        self.verdicts = Verdicts([], settings)
        self.tolerances: dict[str, Tolerance] = {}

    def timed(self, check: Check, run: Callable[[], tuple[str, str]]) -> bool:
        """``check`` answered by ``run`` (its answer and difference; an exception is its
        answer), timed and recorded."""
        start = self.clock()
        try:
            check.answered, check.difference = run()
            ok = check.answered != "disagrees"
        except Exception as e:  # any failure of the feature is its answer
            check.answered, ok = f"raised {type(e).__name__}: {e}", False
        check.seconds = self.clock() - start
        check.state = "on" if ok else ("failed" if check.explicit else "off")
        self.verdicts.checks.append(check)
        return ok

    def agree(self, got: Run, tol: Tolerance, extra: str = "", ok: bool = True) -> tuple[str, str]:
        """``got`` against the reference: ``agrees`` or ``disagrees``, and the difference."""
        diff = compare(self.ref, got)
        verdict = "agrees" if ok and diff.within(tol) else "disagrees"
        return verdict, f"{extra}{diff}; tolerance {tol}"

    def run(self) -> Verdicts:
        path, s, device = self.path, self.settings, self.device
        self.images = path.decode_plain()
        self.persons = []
        if self.detector is not None:
            row = Check("detector", f"HEATPOSE_DETECTOR={s.detector}", "detect", explicit=True)
            if not self.timed(row, self._detect):
                return self.verdicts
        else:
            self.persons = path.persons(self.images)
        base = Check("plain", "the plain path", f"Pillow, cv2 crops, torch float32 on {device}")
        base.explicit = True
        if not self.timed(base, self._reference):
            return self.verdicts
        if decodes_with_torch(s, device):
            self._decode()
        if crops_on_device(s.crop, device):
            self.tolerances["crop"] = REQUEST_PATH
            row = Check("crop", setting_of("crop", s), f"one batched warp on {device}")
            row.explicit = s.crop != "auto"
            plain = self.plain
            self.timed(
                row,
                lambda: self.agree(
                    path.run(self.images, self.persons, plain, on_device=True), REQUEST_PATH
                ),
            )
        if type(self.predictor.forward) is not TorchBackend:
            self._backend()
        if self.predictor.amp:
            self._amp()
        seen = {c.feature for c in self.verdicts.checks}
        for name in FEATURE_INFO:
            if name not in seen:
                tried = f"not used by these settings on {device}"
                self.verdicts.checks.append(Check(name, setting_of(name, s), tried))
        if not any(c.state == "failed" for c in self.verdicts.checks):
            self._whole_path()
        return self.verdicts

    def _detect(self) -> tuple[str, str]:
        self.persons = self.path.persons(self.images)
        return f"{sum(len(p) for p in self.persons)} persons", ""

    def _reference(self) -> tuple[str, str]:
        self.ref = self.path.run(self.images, self.persons, self.plain, on_device=False)
        if not np.isfinite(self.ref.heatmaps).all():
            raise ValueError("non-finite heatmaps")
        return f"{len(self.images)} images, {len(self.ref.keypoints)} persons", ""

    def _decode(self) -> None:
        cuda = self.device.type == "cuda"
        tol = self.tolerances["decode"] = NVJPEG if cuda else REQUEST_PATH
        row = Check(
            "decode",
            setting_of("decode", self.settings),
            f"torchvision decode_jpeg on {self.device}{' (nvJPEG)' if cuda else ''}",
            explicit=self.settings.decode != "auto",
        )

        def decode() -> tuple[str, str]:
            decoded = self.path.decode_on(self.device)
            px = pixel_difference(decoded, self.images)
            got = self.ref  # the same pixels through the same plain stages: the reference
            if px != 0:
                got = self.path.run(decoded, self.persons, self.plain, on_device=False)
            extra = f"pixels {px:.2f} grey levels (tolerance {PIXEL_TOLERANCE}), "
            return self.agree(got, tol, extra, px <= PIXEL_TOLERANCE)

        self.timed(row, decode)

    def _backend(self) -> None:
        p, s = self.predictor, self.settings
        tol = self.tolerances["backend"] = _forward_tolerance(p, s)
        named = "backend" in s.model_fields_set or s.onnx is not None
        at = f" at batch {p.forward.buckets[0]}" if isinstance(p.forward, Bucketed) else ""
        row = Check(
            "backend",
            setting_of("backend", s),
            f"{p.forward.name} forward{at} on {self.device}",
            explicit=named,
        )
        fp32 = copy.copy(p)
        fp32.amp = False
        got = lambda: self.path.run(self.images, self.persons, fp32, on_device=False)  # noqa: E731
        self.timed(row, lambda: self.agree(got(), tol))

    def _amp(self) -> None:
        self.tolerances["amp"] = HALF_FORWARD
        p = self.predictor
        row = Check("amp", AMP_SETTING, f"autocast {p.amp_dtype} on {p.device}")
        amp = plain_twin(p)
        amp.amp = True
        got = lambda: self.path.run(self.images, self.persons, amp, on_device=False)  # noqa: E731
        self.timed(row, lambda: self.agree(got(), HALF_FORWARD))

    def _whole_path(self) -> None:
        """The configured path end to end (what stayed on), against the reference; when it
        disagrees, every feature in it falls back (or, named, stops start-up)."""
        v = self.verdicts
        on = [c for c in v.checks if c.feature in FEATURE_INFO and c.state == "on"]
        decode_on, crop_on = v.state("decode") == "on", v.state("crop") == "on"
        v.settings = self.settings.model_copy(
            update={
                "decode": "torch" if decode_on else "pillow",
                "crop": "device" if crop_on else "cv2",
            }
        )
        if not on:
            return
        served = copy.copy(self.predictor)
        v.apply(served)
        tol = _loosest([self.tolerances[c.feature] for c in on])
        row = Check("path", "the configured path", " + ".join(c.feature for c in on))

        def whole() -> tuple[str, str]:
            decoded = self.path.decode_on(self.device) if decode_on else self.images
            got = self.path.run(decoded, self.path.persons(decoded), served, on_device=crop_on)
            return self.agree(got, tol)

        if self.timed(row, whole):
            return
        row.state = "failed" if any(c.explicit for c in on) else "off"
        for c in on:
            c.state = "failed" if c.explicit else "off"
            c.answered += "; the configured path with it disagrees"
        if row.state == "off":
            self._whole_path()  # what is left is the plain path: settings resolved, no row
