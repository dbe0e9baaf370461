"""An s3prl-style entry point: any upstream as ``forward(wavs: list[Tensor]) -> dict``.

    from speechssl.hub import upstream

    model = upstream("runs/hubert-tiny")          # a run folder, checkpoint, HF folder, name
    out = model([torch.randn(16000), torch.randn(12000)])
    out["hidden_states"]                            # layers + 1 tensors [B, F, D], input first

This is the calling convention of s3prl's upstreams (SUPERB): a list of 1-D 16 kHz waveforms
of any lengths in, a dict with ``"hidden_states"`` (one padded ``[B, F, D]`` tensor per layer)
out; here also ``"mask"`` (``[B, F]`` bool, True = valid frame; padded frames are 0) and
``"last_hidden_state"``. ``get_downsample_rates(key)`` gives the samples per frame (320 for our
frame-level Transformers and the transformers models, 160 for ``fbank`` / ``mfcc``).

Anything :func:`~speechssl.models.registry.load_upstream` loads works: a run folder (its
latest checkpoint), a checkpoint folder, a local transformers folder (wav2vec2, HuBERT, WavLM,
data2vec-audio) or a name (``fbank``, ``mfcc``, ``tiny``...). The waves are padded with zeros
and given with their lengths, so each utterance's valid frames are those of the utterance
alone (our encoders; transformers' group-norm models see the padding, see
:mod:`speechssl.models.hf`).

Layer: at the recipes level (9), not in ``models``: it is an entry point for other toolkits,
a user job's wiring of the library like a recipe, which nothing in the library may depend on;
it imports only :mod:`speechssl.models`, and only the CLI (10) could import it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from speechssl.errors import UserError
from speechssl.models.registry import load_upstream
from speechssl.models.upstream import Upstream

__all__ = ["HubUpstream", "upstream"]

SAMPLE_RATE = 16000


class HubUpstream(nn.Module):
    """An :class:`~speechssl.models.upstream.Upstream` behind s3prl's ``forward(wavs)``."""

    def __init__(self, model: Upstream):
        super().__init__()
        self.model = model
        self.num_layers = model.num_layers
        self.hidden_dim = model.hidden_dim
        self.frame_rate = model.frame_rate

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        """Input samples per output frame (s3prl's name for it)."""
        return round(SAMPLE_RATE / self.frame_rate)

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if isinstance(wavs, torch.Tensor) and wavs.dim() == 1:
            wavs = [wavs]
        if len(wavs) == 0:
            raise UserError("upstream got no waveform")
        for i, w in enumerate(wavs):
            if w.dim() != 1:
                raise UserError(f"wave {i} has shape {tuple(w.shape)}; expected 1-D 16 kHz audio")
        lengths = torch.tensor([len(w) for w in wavs], dtype=torch.int64, device=wavs[0].device)
        wave = torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
        out = self.model(wave, lengths)
        return {
            "hidden_states": list(out.hidden_states),
            "last_hidden_state": out.hidden_states[-1],
            "mask": out.mask,
        }


def upstream(path: str | Path, device: str | torch.device = "cpu") -> HubUpstream:
    """The upstream at ``path`` (see the module docstring), in eval mode on ``device``."""
    return HubUpstream(load_upstream(path, device=device)).eval()
