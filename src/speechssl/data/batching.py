"""From lhotse CutSets to padded tensor batches.

lhotse samplers (``SimpleCutSampler``, ``DynamicBucketingSampler``) yield whole mini-batches
as CutSets, so :class:`CutDataset` is "map-style" with a CutSet as its index and is used with
``DataLoader(..., batch_size=None)``::

    encoders = build_label_encoders(train_cuts, ["speaker"])
    sampler = DynamicBucketingSampler(train_cuts, max_duration=200, shuffle=True)
    loader = DataLoader(CutDataset(encoders, max_duration=4.0), sampler=sampler, batch_size=None)

Randomness (crops, augmentation) of one mini-batch comes from :class:`BatchRNG`: the trainer
hands each dataset a :class:`SeededCuts`, whose seed it derives from the batch's position
(train seed, rank, epoch, index in the epoch), so a batch draws the same crops with 0 or N
DataLoader workers and after a resume, and ranks and epochs draw different ones.

Labels are read from the first supervision's custom fields (``cut.supervisions[0].custom``),
falling back to the supervision's own attribute of that name (``speaker``, ``gender``,
``language``) and then to ``cut.custom``. They are turned into class indices by a
:class:`LabelEncoder` that is built once from the training CutSet, so every batch, worker and
split agrees on the mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut

from speechssl.audio.crops import fixed_crop, random_crop
from speechssl.audio.io import SAMPLE_RATE, load_cut
from speechssl.errors import UserError

__all__ = [
    "Batch",
    "BatchRNG",
    "CutDataset",
    "LabelEncoder",
    "LabelError",
    "SeededCuts",
    "build_label_encoders",
    "collate_cuts",
    "get_label",
    "mix_seed",
]

CropMode = Literal["random", "start", "center"]


class LabelError(UserError, ValueError):
    """A label that is missing from a cut or unknown to its encoder."""


_MISSING = object()


def get_label(cut: Cut, field: str) -> Any:
    """The value of label ``field`` for ``cut`` (see the module docstring for where it looks)."""
    for sup in cut.supervisions[:1]:
        custom = sup.custom or {}
        if field in custom:
            return custom[field]
        value = getattr(sup, field, _MISSING)
        if value is not _MISSING and value is not None and not callable(value):
            return value
    custom = getattr(cut, "custom", None) or {}
    if field in custom:
        return custom[field]
    raise LabelError(f"cut {cut.id!r} has no label {field!r}")


class LabelEncoder:
    """A fixed mapping from the label values of one field to ``0 .. n-1``.

    Classes are the sorted distinct values (so the mapping does not depend on cut order);
    encoding a value that was not seen when the encoder was built raises :class:`LabelError`
    rather than inventing a new index that a trained classifier head could not have.
    """

    def __init__(self, field: str, values: Iterable[Any]) -> None:
        self.field = field
        distinct = set(values)
        try:
            self.classes: list[Any] = sorted(distinct)
        except TypeError:  # mixed types, e.g. ints and strings
            self.classes = sorted(distinct, key=lambda v: (type(v).__name__, str(v)))
        if not self.classes:
            raise LabelError(f"no values for label {field!r}")
        self._index = {v: i for i, v in enumerate(self.classes)}

    @classmethod
    def from_cuts(cls, cuts: Iterable[Cut], field: str) -> LabelEncoder:
        """The encoder of every value of ``field`` found in ``cuts``."""
        return cls(field, (get_label(c, field) for c in cuts))

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, value: Any) -> bool:
        return value in self._index

    def encode(self, value: Any) -> int:
        """The index of ``value``; :class:`LabelError` if it was never seen."""
        try:
            return self._index[value]
        except (KeyError, TypeError):
            shown = ", ".join(map(repr, self.classes[:10]))
            more = f", ... ({len(self.classes)} in all)" if len(self.classes) > 10 else ""
            raise LabelError(
                f"unseen value {value!r} for label {self.field!r}; known: {shown}{more}"
            ) from None

    def decode(self, index: int) -> Any:
        """The label value of class ``index``."""
        return self.classes[index]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, e.g. to store next to a checkpoint."""
        return {"field": self.field, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelEncoder:
        """Inverse of :meth:`to_dict`."""
        return cls(data["field"], data["classes"])

    def __repr__(self) -> str:
        return f"LabelEncoder({self.field!r}, {len(self)} classes)"


def build_label_encoders(cuts: Iterable[Cut], fields: Sequence[str]) -> dict[str, LabelEncoder]:
    """One :class:`LabelEncoder` per field, built in a single pass over ``cuts``."""
    values: dict[str, list[Any]] = {f: [] for f in fields}
    for cut in cuts:
        for f in fields:
            values[f].append(get_label(cut, f))
    return {f: LabelEncoder(f, v) for f, v in values.items()}


@dataclass
class Batch:
    """A padded batch of audio with its labels.

    ``audio`` is ``[B, T]`` float32 at 16 kHz, zero after each row's length; ``mask`` is
    ``True`` on valid samples (``mask.sum(1) == lengths``); ``labels[field]`` is ``[B]``
    int64 class indices; ``cut_ids`` keeps the rows traceable to the manifest.
    """

    audio: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    cut_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.audio.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(
            audio=self.audio.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            labels={k: v.to(device, non_blocking=non_blocking) for k, v in self.labels.items()},
            cut_ids=list(self.cut_ids),
        )

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return Batch(
            audio=self.audio.pin_memory(),
            lengths=self.lengths.pin_memory(),
            mask=self.mask.pin_memory(),
            labels={k: v.pin_memory() for k, v in self.labels.items()},
            cut_ids=list(self.cut_ids),
        )


def collate_cuts(
    cuts: Iterable[Cut],
    label_fields: Sequence[str] | None = None,
    label_encoders: Mapping[str, LabelEncoder] | None = None,
    max_duration: float | None = None,
    crop: CropMode = "random",
    generator: torch.Generator | None = None,
) -> Batch:
    """Load, optionally crop, and zero-pad ``cuts`` into a :class:`Batch` (in the given order).

    ``label_fields`` defaults to every field in ``label_encoders``; each requested field needs
    an encoder (encoders are built from the training set, never per batch). Cuts longer than
    ``max_duration`` seconds are cropped to it, at a random place (``crop="random"``, drawn
    from ``generator``) or deterministically (``"start"``/``"center"``); shorter cuts are kept
    whole and padded to the longest row.
    """
    cuts = list(cuts)
    if not cuts:
        raise ValueError("cannot collate an empty list of cuts")
    encoders = dict(label_encoders or {})
    fields = list(encoders) if label_fields is None else list(label_fields)
    missing = [f for f in fields if f not in encoders]
    if missing:
        raise ValueError(f"no LabelEncoder for label field(s) {missing}; build them from the cuts")
    max_samples = None
    if max_duration is not None:
        if max_duration <= 0:
            raise ValueError(f"max_duration must be positive, got {max_duration}")
        max_samples = max(1, round(max_duration * SAMPLE_RATE))

    labels = {
        f: torch.tensor([encoders[f].encode(get_label(c, f)) for c in cuts], dtype=torch.int64)
        for f in fields
    }

    waves = []
    for cut in cuts:
        wave = torch.from_numpy(load_cut(cut, SAMPLE_RATE))
        if max_samples is not None and wave.shape[0] > max_samples:
            if crop == "random":
                wave, _ = random_crop(wave, max_samples, generator)
            elif crop in ("start", "center"):
                wave, _ = fixed_crop(wave, max_samples, crop)
            else:
                raise ValueError(f"crop must be 'random', 'start' or 'center', got {crop!r}")
        waves.append(wave)

    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.int64)
    audio = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for row, wave in zip(audio, waves, strict=True):
        row[: wave.shape[0]] = wave
    mask = torch.arange(audio.shape[1])[None, :] < lengths[:, None]
    return Batch(audio, lengths, mask, labels, [c.id for c in cuts])


def mix_seed(*parts: int) -> int:
    """One seed in ``[0, 2**63)`` from integers, order-sensitive and well spread (numpy's
    ``SeedSequence``): nearby inputs such as consecutive batch indices give unrelated streams."""
    words = [int(p) % 2**64 for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


@dataclass(frozen=True)
class SeededCuts:
    """A sampler's mini-batch with the seed of its randomness (the trainer makes these).

    Iterates and sizes like its cuts, so code that only reads the cuts need not unwrap it.
    """

    cuts: Any  # a CutSet, or any iterable of cuts
    seed: int

    def __iter__(self) -> Iterator[Cut]:
        return iter(self.cuts)

    def __len__(self) -> int:
        return len(self.cuts)


class BatchRNG:
    """Splits a dataset's index item into ``(cuts, generator)``: where a batch's randomness
    comes from.

    * :class:`SeededCuts` (from the trainer): a fresh generator seeded with the item's seed,
      mixed with ``seed`` when one is set. It depends only on the batch's position, so workers,
      epochs and resumes need no generator state.
    * plain cuts (the Python API, tests): one generator per process, seeded ``seed + worker
      id`` and advancing from batch to batch; ``seed=None`` gives ``None`` (torch's global RNG).
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._worker: int | None = None

    def __call__(self, item: Any) -> tuple[Any, torch.Generator | None]:
        if isinstance(item, SeededCuts):
            seed = item.seed if self.seed is None else mix_seed(self.seed, item.seed)
            return item.cuts, torch.Generator().manual_seed(seed)
        if self.seed is None:
            return item, None
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        if self._generator is None or self._worker != worker:
            self._generator = torch.Generator().manual_seed(self.seed + worker)
            self._worker = worker
        return item, self._generator

    def __getstate__(self) -> dict[str, Any]:
        return {"seed": self.seed, "_generator": None, "_worker": None}


class CutDataset(torch.utils.data.Dataset):
    """A map-style dataset indexed by CutSet mini-batches, as yielded by lhotse samplers.

    Random crops draw from :class:`BatchRNG` (``seed`` mixed into the trainer's batch seeds;
    outside the trainer a generator seeded ``seed + worker_id``, or torch's global RNG
    without a seed).
    """

    def __init__(
        self,
        label_encoders: Mapping[str, LabelEncoder] | None = None,
        label_fields: Sequence[str] | None = None,
        max_duration: float | None = None,
        crop: CropMode = "random",
        seed: int | None = None,
    ) -> None:
        self.label_encoders = dict(label_encoders or {})
        self.label_fields = label_fields
        self.max_duration = max_duration
        self.crop = crop
        self.seed = seed
        self._rng = BatchRNG(seed)

    def __getitem__(self, item: CutSet | SeededCuts) -> Batch:
        cuts, generator = self._rng(item)
        return collate_cuts(
            cuts,
            label_fields=self.label_fields,
            label_encoders=self.label_encoders,
            max_duration=self.max_duration,
            crop=self.crop,
            generator=generator,
        )
