"""Random labelled chunks of cuts, for fine-tuning an utterance-level encoder.

Training on random chunks of ``chunk`` seconds (rather than whole utterances) is the
transfer recipe of method D (Cho et al., 2022); evaluation embeds whole utterances instead.
"""

from __future__ import annotations

import torch

from speechssl.data.batching import Batch, BatchRNG, LabelEncoder, collate_cuts

__all__ = ["ChunkDataset"]


class ChunkDataset(torch.utils.data.Dataset):
    """Random chunks of labelled cuts, each optionally augmented (randomness: :class:`BatchRNG`)."""

    def __init__(self, encoder: LabelEncoder, chunk: float, augmenter, seed: int):
        self.encoder, self.chunk, self.augmenter = encoder, chunk, augmenter
        self._rng = BatchRNG(seed)

    def __getitem__(self, cuts) -> Batch:
        cuts, gen = self._rng(cuts)
        batch = collate_cuts(
            cuts, label_encoders={self.encoder.field: self.encoder}, max_duration=self.chunk,
            generator=gen,
        )  # fmt: skip
        if self.augmenter is not None:
            g = gen if gen is not None else torch.default_generator
            for row, n in enumerate(batch.lengths.tolist()):
                batch.audio[row, :n] = self.augmenter(batch.audio[row, :n], g)
        return batch
