"""Training and evaluation of heatpose models on COCO-format keypoint data.

The command lines (``heatpose train|eval|synth``, ``python -m training.loop.learning_curve`` ...)
are in :mod:`heatpose_cli`; the library functions they call are here (:func:`training.train.run`,
:func:`training.evaluate.run`, :func:`training.synthetic.dataset.run`). The names below are the
package's public API for code.

They are imported on first use (PEP 562 ``__getattr__``, as scientific Python's lazy loading
does), not when the package is: importing one light module of it (``training.data.keypoint_spec``'s
names, say) must not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# The public API: name -> the module that owns it.
_OWNERS = {
    "AugmentParams": "training.data.transforms",
    "NO_AUGMENT": "training.data.transforms",
    "Sample": "training.data.transforms",
    "TopDownTransform": "training.data.transforms",
    "CocoKeypoints": "training.data.coco",
    "DataError": "training.data.coco",
    "available_splits": "training.data.coco",
    "load_coco": "training.data.coco",
    "KeypointMSELoss": "training.loop.engine",
    "StepRecord": "training.loop.engine",
    "WarmupMultiStep": "training.loop.engine",
    "evaluate_model": "training.loop.engine",
    "train_one_epoch": "training.loop.engine",
    "coco_keypoint_eval": "training.eval.coco_metrics",
    "ResumeError": "training.loop.resume",
    "load_resume": "training.loop.resume",
    "write_split": "training.synthetic.dataset",
}

__all__ = list(_OWNERS)


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    value = getattr(importlib.import_module(owner), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
