"""Encoders: shapes, exact padding, masked prediction, gradients; the registry's load paths."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.errors import UserError
from speechssl.models.ecapa import EcapaTdnn
from speechssl.models.encoder_config import EcapaConfig, ResNetConfig
from speechssl.models.registry import (
    build_model,
    load_upstream,
    model_spec,
    save_upstream,
    upstream_id,
)
from speechssl.models.resnet import ResNet
from speechssl.models.transformer import FrameTransformer
from speechssl.models.transformer_config import PRESETS, preset

LENGTHS = torch.tensor([12000, 7001, 4000])


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def batch(seed: int = 0, fill: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(len(LENGTHS), int(LENGTHS.max()), generator=g) * 0.1
    for i, n in enumerate(LENGTHS.tolist()):
        wave[i, n:] = fill
    return wave


def tiny(frontend: str = "logmel", **kw) -> FrameTransformer:
    torch.manual_seed(0)
    return FrameTransformer(preset("tiny", frontend=frontend, **kw)).eval()


def small_ecapa() -> EcapaTdnn:
    torch.manual_seed(0)
    return EcapaTdnn(EcapaConfig(channels=64, mfa_dim=96, attention_dim=16, emb_dim=24)).eval()


def small_resnet() -> ResNet:
    torch.manual_seed(0)
    return ResNet(ResNetConfig(base_width=4, blocks=[1, 1, 1, 1], emb_dim=16)).eval()


def randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# -- parameter counts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,low,high", [("tiny", 1e6, 2e6), ("small", 18e6, 28e6), ("base", 85e6, 100e6)]
)
@pytest.mark.parametrize("frontend", ["logmel", "waveform"])
def test_preset_sizes(name, low, high, frontend):
    m = FrameTransformer(preset(name, frontend=frontend))
    assert low <= n_params(m) <= high
    assert m.num_layers == PRESETS[name].layers + 1 and m.hidden_dim == PRESETS[name].dim


def test_speaker_model_sizes():
    assert 5.5e6 < n_params(EcapaTdnn()) < 7e6  # ECAPA-TDNN (C=512) is ~6.2M in the paper
    assert 13e6 < n_params(EcapaTdnn(EcapaConfig(channels=1024))) < 16e6
    assert 6e6 < n_params(ResNet()) < 8.5e6


# -- shapes and the Upstream contract ---------------------------------------------------------


@pytest.mark.parametrize("make", [tiny, lambda: tiny("waveform"), small_ecapa, small_resnet])
def test_upstream_contract(make):
    model = make()
    out = model(batch(), LENGTHS)
    assert len(out.hidden_states) == model.num_layers
    frames = out.mask.shape[1]
    assert out.mask.dtype == torch.bool
    for h in out.hidden_states:
        assert h.shape == (len(LENGTHS), frames, model.hidden_dim)
        assert torch.all(h[~out.mask] == 0)  # padded frames are exactly zero
    expected = LENGTHS.max().item() / 16000 * model.frame_rate
    assert abs(frames - expected) <= 3


def test_num_frames_formula():
    m, w = tiny(), tiny("waveform")
    lengths = torch.tensor([0, 399, 400, 559, 560, 719, 720, 16000, 16001])
    f100 = torch.where(lengths >= 400, 1 + (lengths - 400) // 160, 0)
    assert torch.equal(m.num_frames(lengths), (f100 + 1) // 2)
    expected = []
    for n in lengths.tolist():
        for k, s in ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)):
            n = (n - k) // s + 1 if n >= k else 0
        expected.append(n)
    assert w.num_frames(lengths).tolist() == expected
    assert expected[-2] == 49  # 1 s at 16 kHz -> 49 frames, as in wav2vec 2.0
    for model in (m, w):
        out = model(torch.randn(len(lengths), 16001), lengths)
        assert torch.equal(out.mask.sum(1), model.num_frames(lengths))


def test_shorter_than_a_frame():
    out = tiny()(torch.randn(2, 300), torch.tensor([300, 200]))
    assert out.mask.shape == (2, 0) and all(h.shape == (2, 0, 128) for h in out.hidden_states)


# -- exact padding ----------------------------------------------------------------------------


def assert_batch_equals_single(model, fn="forward", atol=1e-5):
    wave = batch(fill=3.0)  # loud garbage in the padding
    lengths = LENGTHS
    if fn == "embed":
        emb = model.embed(wave, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model.embed(wave[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(emb[i], alone[0], atol=atol, rtol=0)
        return
    out = model(wave, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = model(wave[i : i + 1, :n], lengths[i : i + 1])
        f = alone.mask.shape[1]
        assert out.mask[i].sum() == f
        for h, a in zip(out.hidden_states, alone.hidden_states, strict=True):
            torch.testing.assert_close(h[i, :f], a[0], atol=atol, rtol=0)


@pytest.mark.parametrize("frontend", ["logmel", "waveform"])
def test_transformer_batch_equals_single(frontend):
    with torch.no_grad():
        assert_batch_equals_single(tiny(frontend))


@pytest.mark.parametrize("make", [small_ecapa, small_resnet])
def test_speaker_batch_equals_single(make):
    model = make()
    randomise_bn(model)
    with torch.no_grad():
        assert_batch_equals_single(model, "forward")
        assert_batch_equals_single(model, "embed")


def test_padding_content_is_never_attended():
    model = tiny()
    with torch.no_grad():
        a = model(batch(fill=0.0), LENGTHS)
        b = model(batch(fill=-7.0), LENGTHS)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(x, y)


# -- masked prediction ------------------------------------------------------------------------


def test_frame_mask_replaces_inputs():
    model = tiny(conv_pos_kernel=8)  # a short positional conv, so that its reach is testable
    wave = batch()
    with torch.no_grad():
        feats, mask = model.features(wave, LENGTHS)
        ref = model(wave, LENGTHS)
        frame_mask = torch.zeros_like(mask)
        frame_mask[:, 3:8] = True
        masked = model(wave, LENGTHS, frame_mask=frame_mask)
        # a different input on the masked frames changes nothing: they are replaced
        other = wave.clone()
        other[:, 3 * 320 + 400 : 6 * 320] += 1.0
        masked_other = model(other, LENGTHS, frame_mask=frame_mask)
    assert feats.shape == (len(LENGTHS), mask.shape[1], model.hidden_dim)
    assert not torch.allclose(ref.hidden_states[0], masked.hidden_states[0])
    # the first hidden state is the embedding + positional conv; the unmasked frames far
    # from the masked span (beyond the pos-conv half-width) keep their input
    far = 8 + model.config.conv_pos_kernel // 2  # past the last masked frame + conv reach
    assert mask.shape[1] > far + 5
    torch.testing.assert_close(
        ref.hidden_states[0][:, far:], masked.hidden_states[0][:, far:], atol=1e-6, rtol=0
    )
    assert not torch.allclose(ref.hidden_states[0][:, 3:8], masked.hidden_states[0][:, 3:8])
    diff = (masked.hidden_states[0] - masked_other.hidden_states[0]).abs()
    assert diff[:, 3:8].max() < 1e-6


def test_frame_mask_shape_checked():
    with pytest.raises(ValueError, match="frame_mask"):
        tiny()(batch(), LENGTHS, frame_mask=torch.zeros(3, 2, dtype=torch.bool))


# -- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: tiny("waveform"), small_ecapa, small_resnet])
def test_gradient_flows(make):
    model = make().train()
    out = model(batch(), LENGTHS)
    loss = out.hidden_states[-1].square().mean()
    if hasattr(model, "embed"):
        loss = loss + model.embed(batch(), LENGTHS).square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad in ([], ["mask_embedding"])


# -- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny, small_ecapa, small_resnet])
def test_save_load_round_trip(tmp_path, make):
    model = make()
    randomise_bn(model)
    save_upstream(model, tmp_path / "ckpt")
    spec = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert spec == model_spec(model)
    loaded = load_upstream(str(tmp_path / "ckpt"))
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        a, b = model(batch(), LENGTHS), loaded(batch(), LENGTHS)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(x, y)


def test_prefix_and_run_folder(tmp_path):
    from safetensors.torch import save_file

    model = tiny()
    run = tmp_path / "run"
    for step, scale in ((100, 0.0), (2000, 1.0), (300, 2.0)):
        folder = run / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        state = {f"encoder.{k}": v * scale for k, v in model.state_dict().items()}
        state["head.weight"] = torch.zeros(3, 3)
        save_file(state, str(folder / "model.safetensors"))
        spec = {**model_spec(model), "prefix": "encoder.", "step": step}
        (folder / "model.json").write_text(json.dumps(spec))
    loaded = load_upstream(str(run))  # highest step: 2000, the unscaled weights
    assert torch.equal(loaded.mask_embedding, model.mask_embedding)
    (run / "checkpoints" / "latest").write_text("step-000300\n")
    loaded = load_upstream(str(run))
    assert torch.equal(loaded.mask_embedding, 2 * model.mask_embedding)
    assert "step-000300" in upstream_id(str(run))


def test_mismatched_checkpoint_refused(tmp_path):
    save_upstream(tiny(), tmp_path / "ckpt")
    spec = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    spec["config"]["layers"] = 5
    spec["config"]["dim"] = 64
    (tmp_path / "ckpt" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="does not match model config: missing keys .*unexpected"):
        load_upstream(str(tmp_path / "ckpt"))


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda p: p / "nope", "nor an existing path"),
        (lambda p: p, "is neither a checkpoint"),
        (lambda p: (p / "model.json").write_text('{"kind": "lstm"}') and p, "unknown model kind"),
        (lambda p: (p / "model.json").write_text("{oops") and p, "not valid JSON"),
        (lambda p: (p / "config.json").write_text('{"model_type": "bert"}') and p, "model_type"),
    ],
)
def test_bad_specs(tmp_path, setup, match):
    (tmp_path / "junk.txt").write_text("junk")
    with pytest.raises(UserError, match=match):
        load_upstream(str(setup(tmp_path)))


def test_named_upstreams_and_ids():
    a, b = load_upstream("tiny"), load_upstream("tiny")
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)  # seeded: the no-pretraining floor is reproducible
    assert load_upstream("fbank").hidden_dim == 80 and load_upstream("mfcc").hidden_dim == 39
    assert upstream_id("tiny") == "tiny" and upstream_id("fbank") == "fbank"
    with pytest.raises(UserError, match="unknown option"):
        build_model("transformer", {"depth": 3})


def test_hf_without_transformers(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # import fails
    (tmp_path / "config.json").write_text('{"model_type": "hubert"}')
    with pytest.raises(UserError, match="install the hf extra"):
        load_upstream(str(tmp_path))


def test_run_folder_with_config_json_is_ours(tmp_path):
    save_upstream(tiny(), tmp_path / "checkpoints" / "step-000010")
    (tmp_path / "config.json").write_text("{}")  # a run's own config, not a transformers one
    assert isinstance(load_upstream(str(tmp_path)), FrameTransformer)
