"""``heatpose doctor``: the start-up self-check on this host, printed (run it on a new node type).

It starts the service as ``heatpose serve`` would (every ``HEATPOSE_*`` setting applies; flags
win), without a server: checkpoint, detector, devices, warm-up and the self-check
(:mod:`app.engine.selfcheck`), then prints per row what was tried, what answered, the difference
from the plain path and the time, and stops the service again.

Exit status: 0 the configured path serves as configured; 1 an acceleration the service chose
failed or disagreed (``heatpose serve`` would turn it off and serve on the plain path); 2 the
service cannot start (a named acceleration failed, or another start-up error, in one line).
Flags are parsed before torch is imported, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from heatpose_cli.args import ArgumentParser


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Flags -> settings overrides (only the flags given)."""
    p = ArgumentParser(
        prog="heatpose doctor",
        formatter_class=argparse.HelpFormatter,  # the defaults are the settings' (HEATPOSE_*)
        description="Check that the configured request path (nvJPEG decoding, device crops, "
        "the backend, AMP) agrees with the plain one on this host. Every HEATPOSE_* variable "
        "applies; flags win over them. Exit 0: serves as configured; 1: an automatic "
        "acceleration would be turned off; 2: the service cannot start.",
    )
    p.add_argument(
        "checkpoint", nargs="?", help="a .safetensors file or a zoo name (HEATPOSE_CHECKPOINT)"
    )
    p.add_argument(
        "--device", help="auto, cpu, cuda, cuda:N, a list cuda:0,cuda:1 or all (HEATPOSE_DEVICE)"
    )
    p.add_argument("--backend", help="torch, onnxruntime, tensorrt or compile (HEATPOSE_BACKEND)")
    p.add_argument("--decode", help="auto, pillow or torch (HEATPOSE_DECODE)")
    p.add_argument("--crop", help="auto, cv2 or device (HEATPOSE_CROP)")
    p.add_argument("--detector", help="auto, none, a zoo name or a file (HEATPOSE_DETECTOR)")
    args = vars(p.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def report_lines(checks: list[Any], seconds: float) -> list[str]:
    """The printed table: one block per row of the self-check
    (:class:`app.engine.selfcheck.Check`)."""
    lines = []
    for c in checks:
        took = f"{c.seconds:.2f} s" if c.state != "unused" else "-"
        lines.append(f"{c.feature:<9}{c.state:<8}{took:>8}  {c.setting}")
        lines.append(f"{'':<9}tried:      {c.tried}")
        if c.answered:
            lines.append(f"{'':<9}answered:   {c.answered}")
        if c.difference:
            lines.append(f"{'':<9}difference: {c.difference}")
    lines.append(f"self-check: {seconds:.2f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the check and print it; returns the exit status (see the module docstring)."""
    overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from app.settings import SettingsError, load_settings

    try:
        settings = load_settings(**overrides)
    except SettingsError as e:
        print(f"heatpose doctor: {e}", file=sys.stderr)
        return 2
    return _doctor(settings)


def _doctor(settings: Any) -> int:
    import logging

    import anyio

    from app.engine.service import PoseService
    from app.engine.startup import StartupError
    from app.observability.metrics import Metrics

    logging.getLogger("heatpose").setLevel(logging.ERROR)  # the table says it all
    service = PoseService(settings, Metrics())

    devices: list[str] = []

    async def run() -> str | None:
        try:
            await service.start()
        except StartupError as e:
            return str(e)
        finally:
            devices.extend(dict.fromkeys(str(p.device) for p in service.predictors))
            await service.stop()
        return None

    stopped = anyio.run(run)
    report = service.selfcheck
    if report is not None:
        where = ", ".join(devices) or settings.device
        print(f"heatpose doctor: {settings.checkpoint} on {where}")
        print("\n".join(report_lines(report.checks, report.seconds)))
    if stopped is not None:
        print(f"heatpose doctor: cannot start: {stopped}", file=sys.stderr)
        return 2
    assert report is not None
    off = [c.feature for c in report.checks if c.state == "off"]
    if off:
        print(f"heatpose doctor: turned off, serving on the plain path: {', '.join(off)}")
        return 1
    print("heatpose doctor: the configured path serves")
    return 0
