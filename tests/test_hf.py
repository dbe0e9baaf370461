"""HFUpstream against the transformers models themselves (tiny random configs, no download)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechssl.models.hf import HFUpstream  # noqa: E402
from speechssl.models.registry import load_upstream, upstream_id  # noqa: E402

CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    **CONV,
)
MODELS = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", {}),
    "wav2vec2-layer": ("Wav2Vec2Config", "Wav2Vec2Model", {"feat_extract_norm": "layer"}),
    "hubert": ("HubertConfig", "HubertModel", {}),
    "wavlm": ("WavLMConfig", "WavLMModel", {"num_buckets": 16, "max_bucket_distance": 40}),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel", {"conv_pos_kernel_size": 5}),
}
LENGTHS = torch.tensor([4000, 2601])


pytestmark = pytest.mark.usefixtures("one_thread")


def expected_frames(n: int) -> int:
    for k, s in zip(CONV["conv_kernel"], CONV["conv_stride"], strict=True):
        n = (n - k) // s + 1 if n >= k else 0
    return n


@pytest.fixture(params=list(MODELS))
def saved(request, tmp_path):
    config_cls, model_cls, extra = MODELS[request.param]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**SMALL, **extra)
    model = getattr(transformers, model_cls)(config).eval()
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_hidden_states_match_transformers(saved):
    reference, folder = saved
    upstream = load_upstream(str(folder))
    assert isinstance(upstream, HFUpstream) and not upstream.training
    assert upstream.num_layers == 3 and upstream.hidden_dim == 32
    assert upstream.frame_rate == 16000 / 20
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, int(LENGTHS.max()), generator=g)
    wave[1, LENGTHS[1] :] = 0.0
    with torch.no_grad():
        out = upstream(wave, LENGTHS)
        attention_mask = None
        if upstream.use_attention_mask:
            attention_mask = (torch.arange(wave.shape[1])[None] < LENGTHS[:, None]).long()
        ref = reference(wave, attention_mask=attention_mask, output_hidden_states=True)
    assert out.mask.sum(1).tolist() == [expected_frames(n) for n in LENGTHS.tolist()]
    assert len(out.hidden_states) == len(ref.hidden_states) == upstream.num_layers
    for h, r in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert h.shape == r.shape
        torch.testing.assert_close(h[out.mask], r[out.mask], atol=1e-5, rtol=0)
        assert torch.all(h[~out.mask] == 0)


def test_layer_norm_models_are_padding_exact(saved):
    """With the attention mask, padding does not leak into valid frames (wav2vec2 "layer").

    Not checked for group-norm models (they take no mask, as their feature extractors) nor
    data2vec-audio, whose stack of positional convs reads padded frames between its layers
    (in transformers and in fairseq alike), so its batch output depends on padding near ends.
    """
    _, folder = saved
    upstream = load_upstream(str(folder))
    if not upstream.use_attention_mask or upstream.config.model_type == "data2vec-audio":
        pytest.skip("this model's outputs depend on padding by design")
    wave = torch.randn(2, int(LENGTHS.max()))
    with torch.no_grad():
        out = upstream(wave, LENGTHS)
        alone = upstream(wave[1:, : LENGTHS[1]], LENGTHS[1:])
    f = alone.mask.shape[1]
    for h, a in zip(out.hidden_states, alone.hidden_states, strict=True):
        torch.testing.assert_close(h[1, :f], a[0], atol=1e-4, rtol=0)


def test_upstream_id_names_weights(saved):
    _, folder = saved
    assert "model.safetensors" in upstream_id(str(folder))


def test_assess_takes_an_hf_folder_and_rates_every_hidden_state(tmp_path):
    from conftest import write_audio
    from lhotse import CutSet
    from lhotse.audio import Recording

    from speechssl.recipes.assess import AssessConfig, run_assess

    config_cls, model_cls, extra = MODELS["hubert"]
    torch.manual_seed(0)
    getattr(transformers, model_cls)(getattr(transformers, config_cls)(**SMALL)).save_pretrained(
        tmp_path / "hf"
    )
    cuts = []
    for i in range(4):
        write_audio(tmp_path / f"a{i}.wav", seconds=1.0, freq=150 + 60 * i)
        cuts.append(Recording.from_file(tmp_path / f"a{i}.wav", recording_id=f"a{i}").to_cut())
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    cfg = AssessConfig(upstream=[str(tmp_path / "hf")], cuts=[tmp_path / "cuts.jsonl.gz"],
                       out=tmp_path / "assess", cache_dir=tmp_path / "cache")  # fmt: skip
    cfg.indicators.k = 4
    rows = run_assess(cfg)
    # front-end output + 2 blocks, each rated
    assert sorted(r["layer"] for r in rows) == [0, 1, 2]
    assert all(1 < r["rankme"] <= SMALL["hidden_size"] for r in rows)
