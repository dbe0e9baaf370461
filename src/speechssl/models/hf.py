"""A local transformers checkpoint (wav2vec2, HuBERT, WavLM, data2vec-audio) as an Upstream.

Loading never downloads (``local_files_only=True``). The waveform is given as is: normalise it
beforehand if the checkpoint's feature extractor says ``do_normalize``. Following the
checkpoints' own feature extractors, a sample-level attention mask is passed only to models
whose conv front-end uses layer norm (``feat_extract_norm == "layer"``, and data2vec-audio);
the group-norm models (wav2vec2/HuBERT/WavLM Base) were trained on unpadded audio and expect
zero padding without a mask, so their batch outputs depend slightly on padding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from speechssl.errors import UserError
from speechssl.models.upstream import Upstream, UpstreamOutput

__all__ = ["HFUpstream"]


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("install the hf extra: pip install 'speechssl[hf]'") from None
    return transformers


class HFUpstream(Upstream):
    """All hidden states of a transformers speech encoder, with a frame-level padding mask."""

    def __init__(self, path: str | Path):
        super().__init__()
        tf = _transformers()
        path = Path(path)
        bars = tf.utils.logging.is_progress_bar_enabled()
        tf.utils.logging.disable_progress_bar()  # the library never prints
        try:
            config = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
            self.model = tf.AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load transformers model from {path}: {exc}") from None
        finally:
            if bars:
                tf.utils.logging.enable_progress_bar()
        self.config = config
        self.use_attention_mask = getattr(config, "feat_extract_norm", "layer") == "layer"
        self.num_layers = config.num_hidden_layers + 1
        self.hidden_dim = config.hidden_size
        self.frame_rate = 16000 / math.prod(config.conv_stride)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames for ``lengths`` samples, by the model's own conv output-length formula."""
        return self.model._get_feat_extract_output_lengths(lengths).to(torch.int64)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> UpstreamOutput:
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.int64)
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=wave.device)
        samples = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
        wave = wave * samples  # the group-norm models expect zero padding
        attention_mask = samples.long() if self.use_attention_mask else None
        out = self.model(wave, attention_mask=attention_mask, output_hidden_states=True)
        hidden = list(out.hidden_states)
        frames = hidden[0].shape[1]
        mask = torch.arange(frames, device=wave.device)[None, :] < self.num_frames(lengths)[:, None]
        keep = mask[..., None].to(hidden[0].dtype)
        return UpstreamOutput([h * keep for h in hidden], mask)
