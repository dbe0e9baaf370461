"""Span masking of frames for masked prediction (wav2vec 2.0 / HuBERT / data2vec style).

Each valid frame of an utterance starts a span with probability ``prob / length``, so that,
as with fairseq's ``mask_prob``, the expected number of spans is ``prob * frames / length``
(``prob`` would be the masked fraction if spans never overlapped). A span covers ``length``
frames and is cut at the utterance's last valid frame, so padding is never masked. Spans
overlap, so a frame at least ``length - 1`` frames after the start is masked with probability
``1 - (1 - prob / length) ** length`` (about 0.49 for 0.65 and 10, as in data2vec);
:func:`expected_mask_fraction` gives the exact expectation including the start edge.

An utterance with at least ``length`` valid frames that drew no start gets one span at a
uniformly drawn start, so every such utterance contributes masked frames to the loss (rare:
``(1 - p/L) ** frames``). Shorter utterances may stay unmasked.
"""

from __future__ import annotations

import torch

__all__ = ["expected_mask_fraction", "span_mask"]


def span_mask(
    valid: torch.Tensor,
    prob: float = 0.65,
    length: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A ``[B, F]`` bool mask (True = masked) inside the valid frames ``valid`` ``[B, F]``.

    Random numbers come from ``generator`` (on the CPU), or from torch's global RNG when it is
    ``None`` -- the trainer seeds and restores that one, so masks drawn in the training
    process are the same after a resume. The same number of draws is made whatever the mask,
    so the RNG advances by a fixed amount per batch shape.
    """
    if not 0.0 <= prob <= length:
        raise ValueError(f"mask prob must lie in [0, length], got {prob}")
    if length < 1:
        raise ValueError(f"mask length must be >= 1, got {length}")
    valid = valid.bool()
    b, f = valid.shape
    device = valid.device
    cpu_valid = valid.cpu()
    u = torch.rand(b, f, generator=generator)
    fallback = torch.rand(b, generator=generator)
    starts = (u < prob / length) & cpu_valid
    counts = cpu_valid.sum(1)
    # One forced span for utterances long enough to hold it that drew none.
    force = (starts.sum(1) == 0) & (counts >= length) & (prob > 0)
    if bool(force.any()):
        pos = (fallback * (counts - length + 1).clamp(min=1)).long()
        rows = force.nonzero(as_tuple=True)[0]
        starts[rows, pos[rows]] = True
    # Frame t is masked iff a start lies in [t - length + 1, t]: a windowed count by cumsum.
    c = torch.cumsum(starts.to(torch.int32), dim=1)
    before = torch.zeros_like(c)
    if f > length:
        before[:, length:] = c[:, :-length]
    masked = ((c - before) > 0) & cpu_valid
    return masked.to(device)


def expected_mask_fraction(frames: int, prob: float = 0.65, length: int = 10) -> float:
    """Expected masked fraction of an utterance of ``frames`` frames, ignoring the forced span.

    Frame ``t`` is covered by any of the ``min(t + 1, length)`` start positions that reach it,
    each drawn independently with probability ``prob / length``.
    """
    q = prob / length
    covered = sum(1.0 - (1.0 - q) ** min(t + 1, length) for t in range(frames))
    return covered / max(frames, 1)
