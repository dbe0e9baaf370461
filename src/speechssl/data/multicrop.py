"""Fixed-length crops of whole utterances, for the utterance-level encoders (DINO, AAM).

DINO trains on several random crops ("views") of each utterance, the supervised baseline on
one; both read them from :class:`MultiCropDataset`, which cuts each view with
:func:`speechssl.audio.crops.random_crop` (its own random offset) and augments each one on its
own. Every crop has a fixed length, so batches count utterances, not seconds:
:func:`utterance_sampler` makes shuffled batches of exactly ``batch_size`` cuts.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lhotse import CutSet
from lhotse.cut import Cut

from speechssl.audio.augment import Augmenter
from speechssl.audio.augment_config import AugmentConfig
from speechssl.audio.crops import random_crop
from speechssl.audio.io import SAMPLE_RATE, load_cut
from speechssl.data.batching import BatchRNG, LabelEncoder, SeededCuts, get_label
from speechssl.data.manifest import load_cut_sets
from speechssl.data.multicrop_config import ShortPolicy
from speechssl.errors import UserError

__all__ = [
    "CropBatch",
    "MultiCropDataset",
    "augments",
    "babble_pool",
    "env_rank_world",
    "load_train_cuts",
    "utterance_sampler",
]


@dataclass
class CropBatch:
    """Crops of ``B`` utterances, view-major: row ``v * B + b`` is view ``v`` of utterance ``b``.

    ``short_global`` / ``short_local``: utterances shorter than a global / local crop
    (repeated or padded per the policy). ``lengths`` (valid samples of every crop) is what the
    trainer counts as audio processed.
    """

    global_audio: torch.Tensor  # [G * B, Tg]
    global_lengths: torch.Tensor  # [G * B]
    local_audio: torch.Tensor  # [L * B, Tl] (0 rows without local crops)
    local_lengths: torch.Tensor  # [L * B]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    cut_ids: list[str] = field(default_factory=list)
    short_global: int = 0
    short_local: int = 0

    def __len__(self) -> int:
        return len(self.cut_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.cat([self.global_lengths, self.local_lengths])

    def _map(self, fn) -> CropBatch:
        return dataclasses.replace(
            self,
            global_audio=fn(self.global_audio),
            global_lengths=fn(self.global_lengths),
            local_audio=fn(self.local_audio),
            local_lengths=fn(self.local_lengths),
            labels={k: fn(v) for k, v in self.labels.items()},
            cut_ids=list(self.cut_ids),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CropBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> CropBatch:
        return self._map(lambda t: t.pin_memory())


class MultiCropDataset(torch.utils.data.Dataset):
    """Multi-crop views of a CutSet mini-batch (index: a CutSet from a lhotse sampler).

    Every crop has its own random offset and, with ``augment``, its own augmentation (on its
    valid samples). All of a batch's randomness comes from one generator,
    :class:`speechssl.data.batching.BatchRNG`'s: under the trainer, ``seed`` mixed with the
    batch's seed (train seed, rank, epoch, index), so ranks and epochs draw different crops
    and a resumed run the same ones; given plain cuts, one generator seeded ``seed`` (plus the
    worker id). Same seed, same crops.

    Args:
        global_crops / global_seconds, local_crops / local_seconds: the views.
        short_policy: ``"repeat"`` or ``"zero"`` for utterances shorter than a crop (the
            :data:`speechssl.audio.crops.PadMode` of that name).
        augment: an :class:`AugmentConfig` (``None``: no augmentation).
        babble_pool: utterances the augmenter mixes into babble noise.
        label_encoders: field -> :class:`LabelEncoder` to add ``labels`` (supervised runs).
        seed: see above.
    """

    def __init__(
        self,
        global_crops: int = 2,
        global_seconds: float = 3.0,
        local_crops: int = 4,
        local_seconds: float = 2.0,
        short_policy: ShortPolicy = "repeat",
        augment: AugmentConfig | None = None,
        babble_pool: Iterable[Cut] | None = None,
        label_encoders: Mapping[str, LabelEncoder] | None = None,
        seed: int = 0,
    ) -> None:
        if global_crops < 1 or local_crops < 0:
            raise UserError("crops: need global-crops >= 1 and local-crops >= 0")
        if short_policy not in ("repeat", "zero"):
            raise UserError(f"short-policy must be repeat or zero, got {short_policy!r}")
        self.global_crops, self.local_crops = global_crops, local_crops
        self.global_len = round(global_seconds * SAMPLE_RATE)
        self.local_len = round(local_seconds * SAMPLE_RATE) if local_crops else 0
        if self.global_len < 1 or (local_crops and self.local_len < 1):
            raise UserError("crop seconds must be positive")
        self.short_policy: ShortPolicy = short_policy
        self.augmenter = None
        if augment is not None and augments(augment):
            pool = [c for c in (babble_pool or []) if c.sampling_rate == SAMPLE_RATE]
            self.augmenter = Augmenter(augment, pool or None)
        self.label_encoders = dict(label_encoders or {})
        self.seed = int(seed)
        self._rng = BatchRNG(self.seed)

    def _views(
        self, wave: torch.Tensor, count: int, length: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crops = wave.new_zeros(count, length)
        valid = torch.zeros(count, dtype=torch.int64)
        for k in range(count):
            crop, n = random_crop(wave, length, gen, self.short_policy)
            crops[k], valid[k] = crop, n
            if self.augmenter is not None and n:
                crops[k, :n] = self.augmenter(crops[k, :n], gen)
        return crops, valid

    def __getitem__(self, item: CutSet | SeededCuts) -> CropBatch:
        cuts, gen = self._rng(item)
        cuts = list(cuts)
        if not cuts:
            raise ValueError("cannot crop an empty list of cuts")
        g_audio, g_len, l_audio, l_len = [], [], [], []
        short_g = short_l = 0
        for cut in cuts:
            wave = torch.from_numpy(load_cut(cut, SAMPLE_RATE))
            short_g += int(wave.shape[0] < self.global_len)
            short_l += int(self.local_crops > 0 and wave.shape[0] < self.local_len)
            a, n = self._views(wave, self.global_crops, self.global_len, gen)
            g_audio.append(a)
            g_len.append(n)
            a, n = self._views(wave, self.local_crops, max(self.local_len, 1), gen)
            l_audio.append(a)
            l_len.append(n)

        def view_major(parts: list[torch.Tensor]) -> torch.Tensor:  # [B, V, ...] -> [V * B, ...]
            x = torch.stack(parts).transpose(0, 1)
            return x.reshape(-1, *x.shape[2:])

        labels = {
            f: torch.tensor([enc.encode(get_label(c, f)) for c in cuts], dtype=torch.int64)
            for f, enc in self.label_encoders.items()
        }
        return CropBatch(
            global_audio=view_major(g_audio),
            global_lengths=view_major(g_len),
            local_audio=view_major(l_audio),
            local_lengths=view_major(l_len),
            labels=labels,
            cut_ids=[c.id for c in cuts],
            short_global=short_g,
            short_local=short_l,
        )


def augments(cfg: AugmentConfig) -> bool:
    """Whether ``cfg`` changes anything (some augmentation has a positive probability)."""
    return any(p > 0 for p in (cfg.noise_prob, cfg.reverb_prob, cfg.speed_prob, cfg.gain_prob))


def babble_pool(cuts: Iterable[Cut], size: int, seed: int) -> list[Cut]:
    """A uniform sample of ``size`` cuts (reservoir sampling: one pass, any CutSet)."""
    rng, pool = random.Random(seed), []
    for i, cut in enumerate(cuts):
        if len(pool) < size:
            pool.append(cut)
        else:
            j = rng.randint(0, i)
            if j < size:
                pool[j] = cut
    return pool


# -- sampling --------------------------------------------------------------------------------


def env_rank_world() -> tuple[int, int]:
    """This process's rank and the world size, as torchrun sets them (0, 1 without it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def load_train_cuts(paths: list[Path]) -> CutSet:
    """The training cuts of ``--data.train`` (a :class:`UserError` without any)."""
    if not paths:
        raise UserError("no training cuts: pass --data.train")
    return load_cut_sets(paths)


def utterance_sampler(cuts: CutSet, batch_size: int, seed: int):
    """Shuffled batches of exactly ``batch_size`` cuts (BatchNorm needs more than one row),
    this process's share of them under torchrun."""
    from lhotse.dataset import SimpleCutSampler

    if batch_size < 2:
        raise UserError(f"data.batch-size must be at least 2 (BatchNorm), got {batch_size}")
    rank, world = env_rank_world()
    if not cuts.is_lazy and len(cuts) < batch_size * world:
        ranks = f" on each of {world} ranks" if world > 1 else ""
        seconds = sum(c.duration for c in cuts)
        raise UserError(
            f"too little training data for one batch: a batch needs {batch_size} cuts{ranks} "
            f"(--data.batch-size); there are {len(cuts)} cuts, {seconds:.1f} s of audio"
        )
    return SimpleCutSampler(
        cuts,
        max_cuts=batch_size,
        shuffle=True,
        drop_last=True,
        seed=seed,
        rank=rank,
        world_size=world,
    )
