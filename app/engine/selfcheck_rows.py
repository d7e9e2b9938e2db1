"""One row of the start-up self-check (:mod:`app.engine.selfcheck`): what was tried, what answered,
the difference, the time, the verdict; and each acceleration's setting and fallback."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings

AMP_SETTING = "AMP (on by default on CUDA)"


@dataclass(frozen=True)
class Feature:
    """What a feature is called, how it is set and what replaces it."""

    name: str
    fallback: str
    fix: str


FEATURE_INFO = {
    "decode": Feature("decode", "decoding JPEGs with Pillow instead", "HEATPOSE_DECODE=pillow"),
    "crop": Feature("crop", "cutting crops with cv2 instead", "HEATPOSE_CROP=cv2"),
    "backend": Feature(
        "backend",
        "forwarding with the torch module (float32, no batch buckets) instead",
        "HEATPOSE_BACKEND=torch and HEATPOSE_BATCH_BUCKETS=none",
    ),
    "amp": Feature("amp", "forwarding in float32 (AMP off) instead", ""),
}


@dataclass
class Check:
    """One row of the self-check.

    Attributes:
        feature: ``decode``, ``crop``, ``backend``, ``amp`` (accelerations), ``plain`` (the
            reference run), ``detector``, ``path`` (the configured path end to end).
        setting: e.g. ``HEATPOSE_CROP=auto``; ``explicit``: named (not chosen by the service).
        tried: what ran; ``answered``: what came back (``agrees``, ``disagrees``, the error);
        difference: how far from the plain path, with the tolerance.
        seconds: its time; ``state``: ``on`` (used, agrees), ``off`` (turned off: the service
            falls back), ``failed`` (start-up stops), ``unused`` (the settings do not use it).
    """

    feature: str
    setting: str
    tried: str
    answered: str = ""
    difference: str = ""
    seconds: float = 0.0
    state: str = "unused"
    explicit: bool = False

    @property
    def detail(self) -> str:
        out = f"{self.tried}: {self.answered}" if self.answered else self.tried
        return f"{out} ({self.difference})" if self.difference else out

    def line(self) -> str:
        """The one log line of a fallback or a stop."""
        info = FEATURE_INFO.get(self.feature)
        if self.state == "failed":
            fix = f"; set {info.fix} to serve without it" if info and info.fix else ""
            return f"{self.setting}: the start-up self-check failed: {self.detail}{fix}"
        then = f"; {info.fallback}" if info else ""
        gauge = f' (heatpose_fallback{{feature="{self.feature}"}} = 1)' if info else ""
        return f"{self.setting}: {self.detail}{then}{gauge}"


def setting_of(feature: str, s: Settings) -> str:
    """How ``feature`` is set, e.g. ``HEATPOSE_CROP=auto``."""
    if feature == "amp":
        return AMP_SETTING
    named = "backend" in s.model_fields_set or s.onnx is not None
    value = {"decode": s.decode, "crop": s.crop, "backend": s.backend}[feature]
    unset = " (default)" if feature == "backend" and not named else ""
    return f"HEATPOSE_{feature.upper()}={value}{unset}"
