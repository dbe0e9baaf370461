"""Pre-training batches: padded audio, encoder frame counts, aligned k-means and pretext targets.

:class:`PretrainDataset` loads and crops audio and adds, per utterance, the number of encoder
frames and (with a k-means label set) the frame targets aligned to 50 frames/s; it yields a
:class:`PretrainBatch`. Crops draw from :class:`speechssl.data.batching.BatchRNG`, as
``CutDataset``'s do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from lhotse import CutSet

from speechssl.data.batching import Batch, BatchRNG, collate_cuts
from speechssl.errors import UserError

__all__ = ["FRAME_RATE", "PretrainBatch", "PretrainDataset"]

FRAME_RATE = 50.0


@dataclass
class PretrainBatch(Batch):
    """A :class:`Batch` plus ``frames`` ``[B]`` (valid encoder frames per row), ``targets``
    ``[B, F]`` int64 k-means ids padded with -100 (``None`` without a label set), and
    ``adjusted``, how many rows' labels were one frame off and were trimmed or padded."""

    frames: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    targets: torch.Tensor | None = None
    adjusted: int = 0
    pretext: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def valid_frames(self) -> torch.Tensor:
        """``[B, max(frames)]`` bool, True on valid frames."""
        f = int(self.frames.max()) if len(self.frames) else 0
        return torch.arange(f, device=self.frames.device)[None, :] < self.frames[:, None]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PretrainBatch:
        base = super().to(device, non_blocking)
        t = None if self.targets is None else self.targets.to(device, non_blocking=non_blocking)
        return PretrainBatch(
            **vars(base),
            frames=self.frames.to(device, non_blocking=non_blocking),
            targets=t,
            adjusted=self.adjusted,
            pretext={k: v.to(device, non_blocking=non_blocking) for k, v in self.pretext.items()},
        )

    def pin_memory(self) -> PretrainBatch:
        base = super().pin_memory()
        t = None if self.targets is None else self.targets.pin_memory()
        return PretrainBatch(
            **vars(base),
            frames=self.frames.pin_memory(),
            targets=t,
            adjusted=self.adjusted,
            pretext={k: v.pin_memory() for k, v in self.pretext.items()},
        )


class PretrainDataset(torch.utils.data.Dataset):
    """Padded audio + frame counts + aligned k-means targets for a CutSet mini-batch.

    Cuts longer than ``crop_seconds`` are cut to it at a random offset that is a whole number
    of frames (20 ms), so the crop's frames are the full utterance's frames from that offset
    on and the labels are cropped with the same offset. Labels are aligned on the whole
    utterance with :func:`speechssl.kmeans.labels.align_labels` (which refuses a mismatch of
    more than one frame, the label-rate pitfall), then cropped.

    Args:
        frame_counter: lengths in samples -> encoder frames, the encoder's own count
            (``FrameTransformer.frame_counter()``).
        labels: a :class:`speechssl.kmeans.labels.KmeansLabels` or its folder, or ``None``
            (no targets). Only the folder travels to DataLoader workers, which reopen it
            (pickling the memory-mapped shards would copy them into every worker).
        crop_seconds: longest audio per row (``None``: whole cuts).
        seed: mixed into the trainer's batch seeds (:class:`speechssl.data.batching.BatchRNG`);
            outside the trainer, ``None`` draws from torch's global RNG.
        pretext: a :class:`speechssl.pseudolabels.targets.PretextTargets`: frame-level
            pseudo-label targets computed on the cropped audio of each batch.
    """

    def __init__(
        self,
        frame_counter: Callable[[torch.Tensor], torch.Tensor],
        labels: Any | None = None,
        crop_seconds: float | None = None,
        seed: int | None = None,
        pretext: Callable | None = None,
    ) -> None:
        if crop_seconds is not None and crop_seconds * FRAME_RATE < 1:
            raise UserError(f"crop seconds must be at least one frame (20 ms), got {crop_seconds}")
        self.frame_counter = frame_counter
        self.labels_folder = None if labels is None else getattr(labels, "folder", labels)
        self._labels = labels if hasattr(labels, "folder") else None
        self.crop_seconds = crop_seconds
        self.seed = seed
        self.pretext = pretext
        self._rng = BatchRNG(seed)

    @property
    def labels(self) -> Any | None:
        """The k-means label set (opened on first use in each process)."""
        if self._labels is None and self.labels_folder is not None:
            from speechssl.kmeans.labels import KmeansLabels

            self._labels = KmeansLabels(self.labels_folder)
        return self._labels

    def _crop(self, cuts: list, gen: torch.Generator | None) -> tuple[list, list[int]]:
        if self.crop_seconds is None:
            return cuts, [0] * len(cuts)
        crop_frames = int(self.crop_seconds * FRAME_RATE)
        out, offsets = [], []
        for cut in cuts:
            spare = int(cut.duration * FRAME_RATE) - crop_frames
            if spare <= 0:
                out.append(cut)
                offsets.append(0)
                continue
            start = int(torch.randint(spare + 1, (1,), generator=gen).item())
            out.append(
                cut.truncate(
                    offset=start / FRAME_RATE, duration=crop_frames / FRAME_RATE, preserve_id=True
                )
            )
            offsets.append(start)
        return out, offsets

    def __getitem__(self, cuts: CutSet) -> PretrainBatch:
        from speechssl.kmeans.labels import align_labels

        cuts, gen = self._rng(cuts)
        cuts = list(cuts)
        cropped, offsets = self._crop(cuts, gen)
        batch = collate_cuts(cropped)
        frames = self.frame_counter(batch.lengths)
        targets, adjusted, labels = None, 0, self.labels
        if labels is not None:
            targets = torch.full((len(cuts), int(frames.max())), -100, dtype=torch.int64)
            for row, (cut, start, n) in enumerate(zip(cuts, offsets, frames.tolist(), strict=True)):
                if cut.id not in labels:
                    raise UserError(f"the k-means label set has no labels for cut {cut.id!r}")
                full = int(self.frame_counter(torch.tensor([cut.num_samples]))[0])
                aligned, adj = align_labels(
                    labels[cut.id], full, labels.info.label_rate, FRAME_RATE, name=f"cut {cut.id}"
                )
                adjusted += int(adj)
                piece = torch.from_numpy(np.asarray(aligned[start : start + n], dtype=np.int64))
                targets[row, : len(piece)] = piece
        pretext = {} if self.pretext is None else self.pretext(batch.audio, batch.lengths, frames)
        return PretrainBatch(
            **vars(batch), frames=frames, targets=targets, adjusted=adjusted, pretext=pretext
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_labels"] = None  # workers reopen the memory-mapped label set
        return state
