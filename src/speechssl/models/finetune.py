"""An utterance encoder with a new linear classifier, for transfer (``speechssl finetune``).

Staged transfer (method D, Cho et al., 2022) first trains only the classifier and the encoder's last
affine layers, then everything: :meth:`FinetuneModel.freeze_all_but_last` and
:meth:`FinetuneModel.unfreeze` switch between the two, and parts left frozen stay in eval
mode so that their batch-norm statistics do not drift while they are not trained.
"""

from __future__ import annotations

import torch
from torch import nn

from speechssl.errors import UserError

__all__ = ["LAST_AFFINE", "FinetuneModel"]

LAST_AFFINE = ("pool", "pool_bn", "fc", "emb_bn")  # ECAPA-TDNN and ResNet segment-level layers


class FinetuneModel(nn.Module):
    """An encoder's embedding and a new linear classifier; frozen parts stay in eval mode
    (their batch-norm statistics do not drift while they are not trained)."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        if not hasattr(encoder, "embed"):
            raise UserError(
                f"{type(encoder).__name__} has no utterance embedding (embed()); finetune takes "
                "ECAPA-TDNN or ResNet checkpoints (e.g. from `speechssl dino`)"
            )
        self.encoder = encoder
        self.head = nn.Linear(encoder.emb_dim, num_classes)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(wave, lengths))

    def freeze_all_but_last(self) -> None:
        for name, p in self.encoder.named_parameters():
            p.requires_grad = name.split(".")[0] in LAST_AFFINE

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = True

    def train(self, mode: bool = True) -> FinetuneModel:
        super().train(mode)
        if mode:
            for module in self.encoder.children():
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self
