"""Training objectives: a batch and the model's outputs in, a loss and metrics out.

The contract with the trainer is :mod:`.base` (``Objective``, ``Step``). DINO is
:mod:`.dino`, the supervised AAM baseline :mod:`.aam`, transfer classification :mod:`.classify`.
Masked prediction (methods C): span masking, k-means cross-entropy (HuBERT), EMA-teacher
regression (data2vec), pretext regression, and their weighted sum (MT4SSL). The model they
train is :class:`speechssl.models.pretrain.PretrainModel`; its batches come from
:class:`speechssl.data.pretrain.PretrainDataset`.
"""

from speechssl.objectives.masked_prediction import (
    KmeansCE,
    MaskedObjective,
    MultiTarget,
    PretextRegression,
    TeacherRegression,
)
from speechssl.objectives.masking import expected_mask_fraction, span_mask

__all__ = [
    "KmeansCE",
    "MaskedObjective",
    "MultiTarget",
    "PretextRegression",
    "TeacherRegression",
    "expected_mask_fraction",
    "span_mask",
]
