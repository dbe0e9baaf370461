"""Training objectives: a batch and the model's outputs in, a loss and metrics out.

Masked prediction (methods C): span masking, k-means cross-entropy (HuBERT), EMA-teacher
regression (data2vec), pretext regression, and their weighted sum (MT4SSL).
"""

from speechssl.objectives.masked_prediction import (
    FrameCounter,
    KmeansCE,
    KmeansHead,
    MaskedObjective,
    MultiTarget,
    PretextHead,
    PretextRegression,
    PretrainBatch,
    PretrainDataset,
    PretrainModel,
    PretrainOutput,
    TeacherRegression,
    masked_instance_norm,
    teacher_targets,
)
from speechssl.objectives.masking import expected_mask_fraction, span_mask

__all__ = [
    "FrameCounter",
    "KmeansCE",
    "KmeansHead",
    "MaskedObjective",
    "MultiTarget",
    "PretextHead",
    "PretextRegression",
    "PretrainBatch",
    "PretrainDataset",
    "PretrainModel",
    "PretrainOutput",
    "TeacherRegression",
    "expected_mask_fraction",
    "masked_instance_norm",
    "span_mask",
    "teacher_targets",
]
