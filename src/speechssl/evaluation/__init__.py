"""SUPERB-style evaluation of a frozen upstream: cached features, probes, verification, tasks.

:mod:`~speechssl.evaluation.features` runs an upstream over cuts (the one duration-sorted
loop) and caches every layer; :mod:`~speechssl.evaluation.probes` trains probes on tensors;
:mod:`~speechssl.evaluation.probe_task` probes one :class:`Task` end to end;
:mod:`~speechssl.evaluation.verification` scores trials (EER, minDCF) and reads and writes
embeddings and trial lists.
"""

from speechssl.evaluation.features import LayerFeatures, extract_features
from speechssl.evaluation.probes import LayerWeights, ProbeTraining, train_probe
from speechssl.evaluation.tasks import PRESETS, Task, build_task
from speechssl.evaluation.verification import compute_eer, compute_min_dcf, make_trials

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
