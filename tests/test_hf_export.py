"""transformers interop: export to HubertModel and init-from HF folders (tiny random models,
no download). The reference is transformers' own forward and its own tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

transformers = pytest.importorskip("transformers")

from conftest import HF_TINY  # noqa: E402
from lhotse import CutSet  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from speechssl.audio.io import recording  # noqa: E402
from speechssl.cli import main  # noqa: E402
from speechssl.config import build  # noqa: E402
from speechssl.errors import UserError  # noqa: E402
from speechssl.models.hf_export import export_hf, init_from_hf  # noqa: E402
from speechssl.models.registry import save_upstream  # noqa: E402
from speechssl.models.transformer import FrameTransformer  # noqa: E402
from speechssl.models.transformer_config import PRESETS, TransformerConfig  # noqa: E402
from speechssl.recipes.export import ExportConfig, run_export  # noqa: E402
from speechssl.recipes.pretrain import PretrainConfig, build_trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(dim=32, layers=2, heads=4, ffn_dim=64, conv_dim=16, conv_pos_kernel=16)


def _encoder(frontend: str = "waveform", seed: int = 0) -> FrameTransformer:
    """A tiny encoder with every weight random (norm gains and biases too, so that a norm
    mapped to the wrong place changes the output)."""
    torch.manual_seed(seed)
    model = FrameTransformer(TransformerConfig(frontend=frontend, **TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p + 0.2 * torch.randn_like(p))
    return model


def _checkpoint(model: FrameTransformer, folder: Path) -> Path:
    """A training checkpoint: the encoder under ``encoder.`` plus a head, as pretrain writes."""
    save_upstream(model, folder)
    state = {f"encoder.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    state["kmeans_head.proj.weight"] = torch.zeros(4, 32)
    save_file(state, str(folder / "model.safetensors"))
    spec = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**spec, "prefix": "encoder."}))
    return folder


def _wave(batch: int = 2, samples: int = 6400, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def test_export_round_trip_equals_ours(tmp_path):
    ours = _encoder()
    ckpt = _checkpoint(ours, tmp_path / "ckpt")
    out = run_export(ExportConfig(run=str(ckpt), out=tmp_path / "hf"))
    hf, info = transformers.HubertModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    auto = transformers.AutoModel.from_pretrained(str(out))
    assert type(auto).__name__ == "HubertModel"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["do_stable_layer_norm"] is True and cfg["feat_extract_norm"] == "group"
    assert cfg["conv_bias"] is False and cfg["num_conv_pos_embedding_groups"] == 16
    extractor = transformers.AutoFeatureExtractor.from_pretrained(str(out))
    assert extractor.sampling_rate == 16000 and not extractor.do_normalize
    wave = _wave()
    with torch.no_grad():
        mine = ours(wave).hidden_states
        theirs = hf.eval()(wave, output_hidden_states=True)
    assert len(theirs.hidden_states) == len(mine) == 3
    for a, b in zip(mine, theirs.hidden_states, strict=True):
        assert a.shape == b.shape == (2, 19, 32)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(mine[-1], theirs.last_hidden_state, atol=1e-5, rtol=0)
    # the test can fail: a model of other weights is far off
    assert (_encoder(seed=1)(wave).hidden_states[-1] - mine[-1]).abs().max() > 0.1


def test_cli_export_and_logmel_refused(tmp_path, capsys):
    ckpt = _checkpoint(_encoder(), tmp_path / "ckpt")
    assert main(["export", "--run", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert "HubertModel" in capsys.readouterr().out
    logmel = _checkpoint(_encoder("logmel"), tmp_path / "logmel")
    assert main(["export", "--run", str(logmel), "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "logmel front-end" in err[0] and "waveform" in err[0]
    assert not (tmp_path / "no").exists()
    with pytest.raises(UserError, match="export takes"):
        run_export(ExportConfig(run="fbank", out=tmp_path / "fb"))


def test_init_from_our_export_restores_every_weight(tmp_path):
    ours = _encoder()
    export_hf(ours, tmp_path / "hf")
    fresh = _encoder(seed=3)
    report = init_from_hf(fresh, tmp_path / "hf")
    assert not report.fresh and not report.unused
    assert len(report.loaded) == len(ours.state_dict())
    assert report.loaded["blocks.1.qkv.weight"] == [
        f"encoder.layers.1.attention.{n}_proj.weight" for n in "qkv"
    ]
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, atol=1e-6, rtol=0)


def _save(tmp_path: Path, config_cls: str, model_cls: str, **kw) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kw)).eval()
    folder = tmp_path / model_cls
    model.save_pretrained(str(folder))
    return folder, model


def test_init_from_stable_wav2vec2_computes_the_same(tmp_path):
    """A pre-LN group-norm wav2vec2 is our architecture: all loaded, same hidden states."""
    folder, hf = _save(
        tmp_path, "Wav2Vec2Config", "Wav2Vec2Model", do_stable_layer_norm=True, **HF_TINY
    )
    ours = FrameTransformer(TransformerConfig(frontend="waveform", **TINY)).eval()
    report = init_from_hf(ours, folder)
    assert not report.fresh, report.fresh
    wave = _wave(1, 8000)
    with torch.no_grad():
        mine = ours(wave).hidden_states
        theirs = hf(wave, output_hidden_states=True)
    for a, b in zip(mine[:-1], theirs.hidden_states[:-1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(mine[-1], theirs.last_hidden_state, atol=1e-5, rtol=0)


def test_init_from_post_ln_hubert_reports_each_key(tmp_path):
    """A fine-tuned post-LN HuBERT (the default layout, with a CTC head)."""
    folder, hf = _save(tmp_path, "HubertConfig", "HubertForCTC", vocab_size=8, **HF_TINY)
    ours = FrameTransformer(TransformerConfig(frontend="waveform", **TINY))
    report = init_from_hf(ours, folder)
    sd = {k.removeprefix("hubert."): v for k, v in hf.state_dict().items()}
    qkv = torch.cat([sd[f"encoder.layers.0.attention.{n}_proj.weight"] for n in "qkv"])
    torch.testing.assert_close(ours.state_dict()["blocks.0.qkv.weight"], qkv, atol=0, rtol=0)
    torch.testing.assert_close(
        ours.frontend.convs[3].weight, sd["feature_extractor.conv_layers.3.conv.weight"]
    )
    assert "post-LN" in report.fresh["blocks.0.ln1.weight"] and "final_norm.bias" in report.fresh
    assert "post-LN" in report.unused["encoder.layers.1.final_layer_norm.weight"]
    assert "frontend.norm_weight" in report.loaded and "pos_conv.weight" in report.loaded
    assert len(report.loaded) + len(report.fresh) == len(ours.state_dict())
    assert "head" in report.unused["lm_head.weight"]
    assert report.summary().startswith(f"init-from {folder} (hubert): loaded 32 of 42 tensors")


def test_init_from_data2vec_audio_leaves_what_differs_fresh(tmp_path):
    folder, _ = _save(
        tmp_path,
        "Data2VecAudioConfig",
        "Data2VecAudioModel",
        conv_bias=True,
        conv_pos_kernel_size=5,
        **{k: v for k, v in HF_TINY.items() if "conv_pos" not in k},
    )
    ours = FrameTransformer(TransformerConfig(frontend="waveform", **TINY))
    report = init_from_hf(ours, folder)
    assert "frontend.convs.0.weight" in report.loaded and "blocks.1.fc2.weight" in report.loaded
    assert {"pos_conv.weight", "pos_conv.bias", "frontend.norm_weight"} <= set(report.fresh)
    assert report.unused["feature_extractor.conv_layers.2.conv.bias"] == "our convs have no bias"
    assert "encoder.pos_conv_embed.layers.0.conv.weight" in report.unused


def test_init_from_refuses_a_shape_or_structure_mismatch(tmp_path):
    wide, _ = _save(tmp_path, "HubertConfig", "HubertModel", **{**HF_TINY, "intermediate_size": 48})
    ours = FrameTransformer(TransformerConfig(frontend="waveform", **TINY))
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(UserError, match=r"encoder\.layers\.0\.feed_forward\.intermediate_dense"):
        init_from_hf(ours, wide)
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())  # untouched
    heads = tmp_path / "heads"
    _save(heads, "HubertConfig", "HubertModel", **{**HF_TINY, "num_attention_heads": 2})
    with pytest.raises(UserError, match="num_attention_heads=2"):
        init_from_hf(ours, heads / "HubertModel")
    with pytest.raises(UserError, match="waveform front-end"):
        init_from_hf(FrameTransformer(TransformerConfig(**TINY)), wide)


@pytest.fixture()
def cuts(tmp_path) -> Path:
    t = np.arange(16000) / 16000
    rows = []
    for i in range(4):
        path = tmp_path / f"u{i}.flac"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t)).astype(np.float32), 16000)
        rows.append(recording(path, recording_id=f"u{i}").to_cut())
    CutSet.from_cuts(rows).to_file(tmp_path / "cuts.jsonl.gz")
    return tmp_path / "cuts.jsonl.gz"


def test_pretrain_init_from_writes_the_report_and_seeds_the_teacher(tmp_path, cuts):
    t = PRESETS["tiny"]
    kw = dict(
        hidden_size=t.dim,
        num_hidden_layers=t.layers,
        num_attention_heads=t.heads,
        intermediate_size=t.ffn_dim,
        conv_dim=[t.conv_dim] * 7,
        num_conv_pos_embeddings=t.conv_pos_kernel,
        num_conv_pos_embedding_groups=t.conv_pos_groups,
        do_stable_layer_norm=True,
    )
    folder, hf = _save(tmp_path, "HubertConfig", "HubertModel", **kw)
    options = {
        "data.train": [str(cuts)],
        "train.max_steps": 2,
        "train.warmup_steps": 1,
        "train.num_workers": 0,
        "train.batch_duration": 4.0,
        "train.ckpt_every": 100,
        "monitor.every": 0,
        "model.frontend": "waveform",
        "model.init_from": str(folder),
        "out": str(tmp_path / "run"),
    }
    trainer = build_trainer(build(PretrainConfig, options, "data2vec-tiny"))
    report = json.loads((tmp_path / "run" / "init_from.json").read_text())
    assert not report["fresh"] and len(report["loaded"]) == len(trainer.model.encoder.state_dict())
    assert "\n" not in report["summary"] and "loaded" in report["summary"]
    w = hf.state_dict()["encoder.layers.5.feed_forward.output_dense.weight"]
    torch.testing.assert_close(trainer.model.encoder.blocks[5].fc2.weight, w)
    torch.testing.assert_close(trainer.model.teacher.blocks[5].fc2.weight, w)  # EMA from it
    assert "init-from" in (tmp_path / "run" / "log.txt").read_text()
    # two steps, then the run exports: the user's round trip HF -> pretrain -> HF
    trainer.fit()
    out = run_export(ExportConfig(run=str(tmp_path / "run"), out=tmp_path / "exported"))
    again = transformers.HubertModel.from_pretrained(str(out)).eval()
    wave = _wave(1, 4000)
    with torch.no_grad():
        mine = trainer.model.encoder.eval()(wave).hidden_states
        theirs = again(wave, output_hidden_states=True).hidden_states
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    trained = again.state_dict()["encoder.layers.5.feed_forward.output_dense.weight"]
    assert not torch.equal(trained, w)  # training changed the weights it started from
    logmel = {**options, "model.frontend": "logmel", "out": str(tmp_path / "no")}
    with pytest.raises(UserError, match="waveform"):
        build_trainer(build(PretrainConfig, logmel, "data2vec-tiny"))
