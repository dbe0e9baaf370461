"""Cropping waveforms to a fixed length, for training on equal-length segments.

All functions crop along the last dimension of a ``torch.Tensor`` and return the crop
together with its *valid length*: the number of leading samples that are real signal rather
than padding. Randomness always comes from a ``torch.Generator`` (``None`` = torch's global
RNG, which ``DataLoader`` already seeds differently in each worker).

Inputs shorter than ``length`` are handled by ``mode``:

* ``"zero"``: zero-pad at the end; valid length = the input length.
* ``"repeat"``: tile the input in a loop until it fills ``length``; every sample is real
  signal, so the valid length = ``length`` (an empty input cannot be tiled and is zero-padded,
  valid 0). :func:`random_crop` reads the loop from a random start within the input (so short
  utterances give varied crops too), :func:`fixed_crop` from its first sample.
* ``"none"``: return the input unchanged (shorter than ``length``); valid length = its length.
  Useful when a collator pads the batch anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["PadMode", "Offset", "random_crop", "fixed_crop", "crop_batch", "random_offset"]

PadMode = Literal["zero", "repeat", "none"]
Offset = Literal["random", "start", "center"]


def random_offset(total: int, length: int, generator: torch.Generator | None = None) -> int:
    """A uniform start in ``[0, total - length]`` (0 when ``total <= length``)."""
    if total <= length:
        return 0
    return int(torch.randint(total - length + 1, (1,), generator=generator).item())


def _pad(
    wave: torch.Tensor, length: int, mode: PadMode, start: int = 0
) -> tuple[torch.Tensor, int]:
    """Bring a wave with ``T <= length`` samples to ``length`` samples according to ``mode``;
    ``"repeat"`` reads the loop from sample ``start``."""
    total = wave.shape[-1]
    if mode == "none" or total == length:
        return wave, total
    if mode == "repeat" and total > 0:
        reps = -(-(start + length) // total)  # ceil
        tiled = wave.repeat(*([1] * (wave.dim() - 1)), reps)
        return tiled[..., start : start + length], length
    if mode in ("zero", "repeat"):
        pad = wave.new_zeros((*wave.shape[:-1], length - total))
        return torch.cat([wave, pad], dim=-1), total
    raise ValueError(f"unknown pad mode {mode!r}; use 'zero', 'repeat' or 'none'")


def _check(wave: torch.Tensor, length: int) -> None:
    if wave.dim() < 1:
        raise ValueError("wave must have at least one dimension (time last)")
    if length <= 0:
        raise ValueError(f"crop length must be positive, got {length}")


def random_crop(
    wave: torch.Tensor,
    length: int,
    generator: torch.Generator | None = None,
    mode: PadMode = "zero",
) -> tuple[torch.Tensor, int]:
    """A uniformly placed ``length``-sample crop of ``wave`` and its valid length.

    Every start in ``[0, T - length]`` is equally likely, so the whole signal is reachable.
    Short inputs are padded per ``mode`` (module docstring); ``"repeat"`` starts its loop at a
    uniform sample of the input. The crop is a view when no padding is needed.
    """
    _check(wave, length)
    total = wave.shape[-1]
    if total < length:
        if mode == "repeat" and total > 0:
            start = int(torch.randint(total, (1,), generator=generator).item())
            return _pad(wave, length, mode, start)
        return _pad(wave, length, mode)
    start = random_offset(total, length, generator)
    return wave[..., start : start + length], length


def fixed_crop(
    wave: torch.Tensor,
    length: int,
    offset: Literal["start", "center"] | int = "start",
    mode: PadMode = "zero",
) -> tuple[torch.Tensor, int]:
    """A deterministic crop, for evaluation: from the start, the centre, or sample ``offset``.

    ``"center"`` starts at ``(T - length) // 2``. An integer offset is clipped so the crop
    stays inside the signal. Short inputs are padded per ``mode``.
    """
    _check(wave, length)
    total = wave.shape[-1]
    if total < length:
        return _pad(wave, length, mode)
    if offset == "start":
        start = 0
    elif offset == "center":
        start = (total - length) // 2
    elif isinstance(offset, int) and not isinstance(offset, bool):
        start = min(max(offset, 0), total - length)
    else:
        raise ValueError(f"offset must be 'start', 'center' or an int, got {offset!r}")
    return wave[..., start : start + length], length


def crop_batch(
    waves: Sequence[torch.Tensor],
    length: int,
    offset: Offset = "random",
    generator: torch.Generator | None = None,
    mode: Literal["zero", "repeat"] = "zero",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop 1-D waves to ``length`` and stack them: ``([B, length] audio, [B] int64 lengths)``.

    The usual pretraining batch: equal-length segments, short ones padded per ``mode``, with
    valid lengths for the padding mask. ``offset`` picks the crop placement for every wave.
    """
    if not waves:
        raise ValueError("crop_batch needs at least one wave")
    out = []
    valid = []
    for w in waves:
        if w.dim() != 1:
            raise ValueError(f"crop_batch expects 1-D waves, got shape {tuple(w.shape)}")
        if offset == "random":
            c, n = random_crop(w, length, generator, mode)
        else:
            c, n = fixed_crop(w, length, offset, mode)
        out.append(c)
        valid.append(n)
    return torch.stack(out), torch.tensor(valid, dtype=torch.int64)
