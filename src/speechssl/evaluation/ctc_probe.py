"""CTC probes on frozen frames: phone recognition (SUPERB's PR task) with PER.

A probe reads every layer's frames ``[B, T, L, D]`` of a frozen upstream, standardises
them with training-set statistics, takes a learnable weighted sum of layers
(:class:`~speechssl.evaluation.probes.LayerWeights`) and maps each frame to the token
vocabulary plus a blank (index 0) with one of three heads:

* ``linear``: one linear layer per frame, SUPERB's PR probe (the comparable row);
* ``context``: frames stacked over +-``context`` frames, one hidden ReLU layer (a 1-D
  convolution); it learns from ~1.75 h of audio where the linear head barely leaves the
  all-blank plateau;
* ``bilstm``: a 2-layer bidirectional LSTM, as s3prl's ASR probe.

Training is CTC (:class:`torch.nn.CTCLoss`) with AdamW, a linear warm-up and a cosine decay,
greedy decoding, model selection (and early stopping) on dev PER. Edit operations come
from ``jiwer``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jiwer
import torch
from torch import nn

from speechssl.evaluation.probes import LayerWeights
from speechssl.progress import Progress, console

__all__ = [
    "BLANK",
    "CtcHead",
    "CtcProbe",
    "CtcTraining",
    "ctc_min_frames",
    "edit_counts",
    "greedy_decode",
    "train_ctc_probe",
]

BLANK = 0
CtcHead = Literal["linear", "context", "bilstm"]


def ctc_min_frames(tokens: Sequence[int]) -> int:
    """Frames CTC needs for ``tokens``: one per token plus a blank between equal neighbours."""
    return len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:], strict=False))


def edit_counts(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Token error rate (%) and substitution / deletion / insertion counts over a corpus.

    ``refs`` and ``hyps`` are space-separated token strings; a reference must not be empty.
    """
    out = jiwer.process_words(list(refs), list(hyps))
    n = out.hits + out.substitutions + out.deletions
    errors = out.substitutions + out.deletions + out.insertions
    return {
        "per": 100.0 * errors / max(n, 1),
        "substitutions": float(out.substitutions),
        "deletions": float(out.deletions),
        "insertions": float(out.insertions),
        "ref_tokens": float(n),
    }


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path of ``[B, T, V]`` scores: arg-max per frame, repeats merged, blanks removed."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for row, n in zip(best, lengths.tolist(), strict=True):
        path = row[:n]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(t) for t in path[keep & (path != BLANK)]])
    return out


class CtcProbe(nn.Module):
    """Frames ``[B, T, L, D]`` -> standardise -> weighted layer sum -> head -> log-probs."""

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        num_outputs: int,
        layer: int | None = None,
        head: CtcHead = "linear",
        hidden: int = 128,
        context: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        num_layers, dim = mean.shape
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp(min=1e-5))
        self.layers = LayerWeights(num_layers, layer)
        self.head_kind = head
        if head == "linear":
            self.head: nn.Module = nn.Linear(dim, num_outputs)
        elif head == "context":
            self.stack = nn.Conv1d(dim, hidden, 2 * context + 1, padding=context)
            self.head = nn.Sequential(
                nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_outputs)
            )
        elif head == "bilstm":
            self.lstm = nn.LSTM(
                dim, hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=dropout
            )
            self.head = nn.Linear(2 * hidden, num_outputs)
        else:
            raise ValueError(f"head must be linear, context or bilstm, got {head!r}")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, T, V]`` (frames past ``lengths`` are padding)."""
        valid = torch.arange(x.shape[1])[None] < lengths[:, None]
        h = self.layers((x.float() - self.mean) / self.std) * valid[..., None]
        if self.head_kind == "context":
            h = self.stack(h.transpose(1, 2)).transpose(1, 2)
        elif self.head_kind == "bilstm":
            packed = nn.utils.rnn.pack_padded_sequence(
                h, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            h, _ = nn.utils.rnn.pad_packed_sequence(
                self.lstm(packed)[0], batch_first=True, total_length=x.shape[1]
            )
        return self.head(h).log_softmax(-1)


@dataclass
class CtcTraining:
    """How a CTC probe is trained (``batch_size`` in utterances), and its head's size."""

    # Small batches: on ~1 h of audio (900 utterances) CTC needs thousands of updates to leave
    # the all-blank plateau; batch 4 at lr 2e-3 gets there where batch 16 at 5e-3 stalls.
    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 4
    weight_decay: float = 0.0
    patience: int = 10  # epochs without a better dev PER before stopping
    warmup: float = 0.05  # share of all steps with a linear warm-up, then cosine to 0
    hidden: int = 128  # context head's hidden units; LSTM units per direction
    context: int = 4  # context head: frames stacked on each side


def _pad(items: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(t) for t in items])
    return nn.utils.rnn.pad_sequence(list(items), batch_first=True), lengths


def _decode_all(model: CtcProbe, xs: Sequence[torch.Tensor], batch_size: int) -> list[list[int]]:
    model.eval()
    order = sorted(range(len(xs)), key=lambda i: len(xs[i]))
    out: dict[int, list[int]] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            x, n = _pad([xs[i] for i in idx])
            for i, seq in zip(idx, greedy_decode(model(x, n), n), strict=True):
                out[i] = seq
    return [out[i] for i in range(len(xs))]


def score(
    model: CtcProbe, xs: Sequence[torch.Tensor], refs: Sequence[str], vocab: Sequence[str]
) -> dict[str, float]:
    """Greedy-decoded edit counts of ``xs`` against ``refs`` (``vocab[k - 1]`` is output k)."""
    hyps = [" ".join(vocab[t - 1] for t in seq) for seq in _decode_all(model, xs, 32)]
    return edit_counts(refs, hyps)


def train_ctc_probe(
    model: CtcProbe,
    x: Sequence[torch.Tensor],
    y: Sequence[torch.Tensor],
    x_dev: Sequence[torch.Tensor],
    refs_dev: Sequence[str],
    vocab: Sequence[str],
    training: CtcTraining | None = None,
    seed: int = 0,
) -> tuple[CtcProbe, dict]:
    """CTC on ``(x, y)`` (frames ``[T, L, D]`` and token ids >= 1 per utterance); the epoch
    with the lowest dev PER is kept (no dev split: the last epoch).

    Returns the model and a history: epochs run, best epoch, best dev PER, and the dev PER
    of every epoch.
    """
    t = training or CtcTraining()
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    steps = t.epochs * math.ceil(len(x) / t.batch_size)
    warm = max(1, int(t.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm)
            * 0.5
            * (1 + math.cos(math.pi * min(1.0, max(0, s - warm) / max(1, steps - warm))))
        ),
    )
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    best, best_per, best_epoch, stale, epoch, curve = None, math.inf, -1, 0, 0, []
    bar = Progress(t.epochs, "ctc probe", "epoch", leave=False)
    for epoch in range(t.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen).tolist()
        for s in range(0, len(perm), t.batch_size):
            idx = perm[s : s + t.batch_size]
            feats, n = _pad([x[i] for i in idx])
            targets = [y[i] for i in idx]
            log_probs = model(feats, n)
            loss = ctc(
                log_probs.transpose(0, 1),
                torch.cat(targets),
                n,
                torch.tensor([len(tg) for tg in targets]),
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
        if len(x_dev):
            per = score(model, x_dev, refs_dev, vocab)["per"]
            curve.append(round(per, 2))
            bar.set_status(f"dev PER {per:.1f} (best {min(per, best_per):.1f})")
            if per < best_per:
                best, best_per, best_epoch, stale = copy.deepcopy(model.state_dict()), per, epoch, 0
            else:
                stale += 1
        bar.update(emit=False)
        if bar.plain and bar.due():
            console(bar.line())
        if stale >= t.patience:
            break
    bar.close()
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return model, {
        "epochs_run": epoch + 1,
        "best_epoch": best_epoch + 1 if best is not None else epoch + 1,
        "dev_per": best_per if best is not None else math.nan,
        "dev_curve": curve,
    }
