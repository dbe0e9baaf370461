"""SUPERB-style evaluation of a frozen upstream: cached features, probes, verification, tasks.

:mod:`~speechssl.evaluation.features` runs an upstream over cuts (the one duration-sorted
loop) and caches every layer; :mod:`~speechssl.evaluation.probes` trains probes on tensors;
:mod:`~speechssl.evaluation.probe_task` probes one :class:`Task` end to end;
:mod:`~speechssl.evaluation.verification` scores trials (EER, minDCF) and reads and writes
embeddings and trial lists.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from speechssl.evaluation.features import LayerFeatures, extract_features
    from speechssl.evaluation.probes import LayerWeights, ProbeTraining, train_probe
    from speechssl.evaluation.task_presets import PRESETS
    from speechssl.evaluation.tasks import Task, build_task
    from speechssl.evaluation.verification import compute_eer, compute_min_dcf, make_trials

# Loaded on first use, so that reading the task presets (a command's --help) stays light.
_EXPORTS = {
    "PRESETS": "task_presets",
    "LayerFeatures": "features",
    "LayerWeights": "probes",
    "ProbeTraining": "probes",
    "Task": "tasks",
    "build_task": "tasks",
    "compute_eer": "verification",
    "compute_min_dcf": "verification",
    "extract_features": "features",
    "make_trials": "verification",
    "train_probe": "probes",
}
__all__ = [
    "PRESETS",
    "LayerFeatures",
    "LayerWeights",
    "ProbeTraining",
    "Task",
    "build_task",
    "compute_eer",
    "compute_min_dcf",
    "extract_features",
    "make_trials",
    "train_probe",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
