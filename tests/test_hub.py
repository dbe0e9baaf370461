"""speechssl.hub: s3prl's forward(wavs) over our checkpoints and transformers folders."""

from __future__ import annotations

import pytest
import torch
from conftest import HF_TINY

from speechssl.hub import HubUpstream, upstream
from speechssl.models.registry import save_upstream
from speechssl.models.transformer import FrameTransformer
from speechssl.models.transformer_config import TransformerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(dim=32, layers=2, heads=4, ffn_dim=64, conv_dim=16, conv_pos_kernel=16)


def _waves() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8000, generator=g), torch.randn(5000, generator=g)]


def test_hub_forward_pads_and_equals_each_utterance_alone(tmp_path):
    torch.manual_seed(0)
    model = FrameTransformer(TransformerConfig(frontend="waveform", **TINY)).eval()
    save_upstream(model, tmp_path / "ckpt")
    hub = upstream(tmp_path / "ckpt")
    assert isinstance(hub, HubUpstream) and not hub.training
    assert hub.get_downsample_rates("hidden_states") == 320
    waves = _waves()
    with torch.no_grad():
        out = hub(waves)
        alone = [model(w[None]).hidden_states for w in waves]
    hidden = out["hidden_states"]
    assert len(hidden) == 3 and out["last_hidden_state"] is hidden[-1]
    frames = [a[0].shape[1] for a in alone]  # 24 and 15 frames (320x, 400-sample window)
    assert frames == [24, 15]
    assert out["mask"].sum(1).tolist() == frames
    for layer, h in enumerate(hidden):
        assert h.shape == (2, 24, 32)
        for i, n in enumerate(frames):
            torch.testing.assert_close(h[i, :n], alone[i][layer][0], atol=1e-5, rtol=0)
        assert h[1, 15:].abs().max() == 0  # padded frames are zero


def test_hub_reads_a_transformers_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.HubertModel(transformers.HubertConfig(**HF_TINY)).eval()
    hf.save_pretrained(str(tmp_path))
    wave = _waves()[0]
    with torch.no_grad():
        out = upstream(tmp_path)([wave])
        ref = hf(wave[None], output_hidden_states=True).hidden_states
    assert len(out["hidden_states"]) == len(ref) == 3
    for a, b in zip(out["hidden_states"], ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
