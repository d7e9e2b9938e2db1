"""The ``heatpose`` console script: every command line of the project, in one package.

One module per command (``heatpose_cli.serve``, ``.doctor``, ``.predict``, ``.train``,
``.eval``, ``.synth``, ``.weights``, ``.export``), each with one ``main(argv) -> int``; the
argument parser they share is :mod:`heatpose_cli.args`. This package imports ``app``,
``models`` and ``training``; they never import it (``tests/test_quality.py``), except the
``python -m`` entry points kept for deploy files (``python -m app``, ``torchrun -m
training.train``), which call the command's ``main`` here.

``heatpose serve`` imports only the service (never the training code), ``heatpose train``
only the trainer, and so on: each subcommand's module is imported when it is chosen. Each
module's ``main`` parses its flags before it imports torch, so ``heatpose COMMAND --help``
answers without loading torch (``tests/test_cli.py`` checks it).
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("heatpose_cli.serve", "start the inference service (uvicorn)"),
    "doctor": (
        "heatpose_cli.doctor",
        "check the configured request path on this host (new node types)",
    ),
    "predict": ("heatpose_cli.predict", "keypoints of the persons in images and videos, no server"),
    "train": ("heatpose_cli.train", "train a model (torchrun-compatible)"),
    "eval": ("heatpose_cli.eval", "evaluate a checkpoint with COCO OKS AP"),
    "synth": ("heatpose_cli.synth", "write a synthetic COCO-format keypoint data set"),
    "weights": ("heatpose_cli.weights", "list, fetch or import published weights"),
    "export": ("heatpose_cli.export", "export a checkpoint for ONNX Runtime / TensorRT (ONNX)"),
}


def usage() -> str:
    lines = ["usage: heatpose COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'heatpose COMMAND --help' for a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its module's ``main(argv[1:])``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"heatpose: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
