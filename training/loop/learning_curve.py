"""Plot a run's learning curve from its ``metrics.jsonl``: training loss and validation AP.

``python -m training.loop.learning_curve OUTPUT/metrics.jsonl --out curve.png [--title T]``
draws the logged training loss (and its per-epoch mean) against the optimiser step, the LR on
a twin axis, and the COCO AP / AP50 of each evaluation in a second panel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """The JSON lines of ``path`` grouped by their ``type`` (a resumed run appends to it)."""
    groups: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            groups.setdefault(record.get("type", "?"), []).append(record)
    return groups


def plot(groups: dict[str, list[dict]], out: Path, title: str = "") -> None:
    """Write the two-panel PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    train = groups.get("train", [])
    epochs = groups.get("epoch", [])
    evals = groups.get("eval", [])
    ax_loss.plot(
        [r["step"] for r in train],
        [r["loss"] for r in train],
        lw=0.8,
        alpha=0.6,
        label="training loss (logged steps)",
    )
    ax_loss.plot(
        [r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", label="epoch mean"
    )
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("weighted heatmap MSE")
    ax_loss.legend(loc="upper right")
    ax_lr = ax_loss.twinx()
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], "k:", lw=0.8)
    ax_lr.set_ylabel("learning rate (dotted)")
    for key in ("AP", "AP50", "AP75"):
        ax_ap.plot([r["epoch"] for r in evals], [r[key] for r in evals], "o-", label=key)
    ax_ap.set_xlabel("epoch")
    ax_ap.set_ylabel("COCO keypoint AP (val)")
    ax_ap.set_ylim(0, 1)
    ax_ap.grid(alpha=0.3)
    ax_ap.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # python -m training.loop.learning_curve (docs)
    from heatpose_cli.learning_curve import main

    sys.exit(main())
