"""Transfer: staged vs all-at-once fine-tuning freeze what they say; embed and verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from speechssl.data.manifest import Row, build_cutset, save_cuts
from speechssl.errors import UserError
from speechssl.models.ecapa import EcapaConfig, EcapaTdnn
from speechssl.models.registry import save_upstream
from speechssl.recipes.finetune import (
    EmbedConfig,
    FinetuneConfig,
    VerifyConfig,
    run_embed,
    run_finetune,
    run_verify,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FREQS = (250.0, 900.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """24 tones of two classes (by pitch) from 12 speakers; a tiny ECAPA checkpoint."""
    root = tmp_path_factory.mktemp("ft")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        t = np.arange(int(rng.uniform(0.8, 1.2) * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * FREQS[i % 2] * t) + 0.01 * rng.standard_normal(t.size)
        path = root / f"u{i:02d}.flac"
        sf.write(path, x.astype(np.float32), 16000)
        rows.append(Row(path, {"tone": str(i % 2), "speaker": f"s{i % 12}"}, cut_id=path.stem))
    cuts, _ = build_cutset(rows, progress=False)
    cuts_path = root / "cuts.jsonl.gz"
    save_cuts(cuts, cuts_path)
    torch.manual_seed(0)
    enc = EcapaTdnn(EcapaConfig(channels=16, emb_dim=8, n_mels=20, mfa_dim=24, scale=2,
                                attention_dim=8))  # fmt: skip
    ckpt = save_upstream(enc, root / "ecapa")
    return cuts_path, ckpt


def _cfg(setup, out, **kw) -> FinetuneConfig:
    cuts, ckpt = setup
    base = dict(upstream=str(ckpt), out=out, cuts=cuts, label="tone", split_by="speaker",
                epochs=1, batch_size=4, chunk_seconds=0.5, lr=1e-2)  # fmt: skip
    return FinetuneConfig(**{**base, **kw})


def _weights(folder) -> dict[str, torch.Tensor]:
    from speechssl.models.registry import resolve_checkpoint

    w = load_file(str(resolve_checkpoint(folder) / "model.safetensors"))
    return {k.removeprefix("encoder."): v for k, v in w.items()}


def test_staged_trains_only_the_last_layers_first(setup, tmp_path):
    start = _weights(setup[1])
    r = run_finetune(_cfg(setup, tmp_path / "staged", strategy="staged"))
    s1, s2 = _weights(tmp_path / "staged" / "stage1"), _weights(tmp_path / "staged" / "stage2")
    assert torch.equal(s1["conv0.conv.weight"], start["conv0.conv.weight"])  # frozen in stage 1
    assert not torch.equal(s1["fc.weight"], start["fc.weight"])  # trained in stage 1
    assert not torch.equal(s2["conv0.conv.weight"], start["conv0.conv.weight"])  # then all
    # frozen batch norms kept their running statistics in stage 1
    assert torch.equal(s1["conv0.bn.running_mean"], start["conv0.bn.running_mean"])
    assert 0.0 <= r["accuracy"] <= 1.0 and r["mode"] == "classify"
    saved = json.loads((tmp_path / "staged" / "results.json").read_text())
    assert saved["accuracy"] == r["accuracy"]


def test_all_at_once_trains_everything(setup, tmp_path):
    start = _weights(setup[1])
    run_finetune(_cfg(setup, tmp_path / "all", strategy="all"))
    w = _weights(tmp_path / "all" / "all")
    assert not torch.equal(w["conv0.conv.weight"], start["conv0.conv.weight"])


def test_verify_mode_scores_held_out_speakers(setup, tmp_path):
    r = run_finetune(_cfg(setup, tmp_path / "v", label="speaker", eval="verify"))
    assert r["mode"] == "verify" and 0.0 <= r["eer"] <= 1.0
    train, test = set(r["speakers"]["train"]), set(r["speakers"]["test"])
    assert train and test and not train & test  # scored speakers were never trained on
    assert train | test <= {f"s{i}" for i in range(12)}  # (the dev split has the others)
    # every pair of test speakers' utterances can form a trial: at least one per speaker
    assert r["trials"] >= len(test)


def test_encoder_without_embed_is_refused(setup, tmp_path):
    with pytest.raises(UserError, match="embed"):
        run_finetune(_cfg(setup, tmp_path / "x", upstream="fbank"))


def test_embed_then_verify(setup, tmp_path):
    cuts, ckpt = setup
    npz = run_embed(EmbedConfig(upstream=str(ckpt), cuts=cuts, out=tmp_path / "emb.npz"))
    data = np.load(npz)
    assert data["embeddings"].shape == (24, 8) and len(data["cut_ids"]) == 24
    r = run_verify(VerifyConfig(embeddings=npz, cuts=cuts, out=tmp_path / "v.json"))
    assert 0.0 <= r["eer"] <= 1.0 and (tmp_path / "v.json").is_file()


def test_verify_is_perfect_on_planted_embeddings_and_checks_trials(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    spk = np.array([0, 0, 0, 1, 1, 1])
    emb = np.eye(2)[spk] + 0.01 * np.random.default_rng(0).standard_normal((6, 2))
    np.savez(tmp_path / "e.npz", embeddings=emb.astype(np.float32), cut_ids=np.array(ids))
    trials = tmp_path / "trials.txt"
    trials.write_text("c0 c1 1\nc3 c4 1\nc0 c3 0\nc1 c5 0\n")
    r = run_verify(VerifyConfig(embeddings=tmp_path / "e.npz", trials=trials, out=None))
    assert r["eer"] == 0.0 and r["trials"] == 4
    trials.write_text("c0 c9 1\n")
    with pytest.raises(UserError, match="no embedding"):
        run_verify(VerifyConfig(embeddings=tmp_path / "e.npz", trials=trials))
    trials.write_text("c0 c1 yes\n")
    with pytest.raises(UserError, match="expected"):
        run_verify(VerifyConfig(embeddings=tmp_path / "e.npz", trials=trials))


def test_verify_refuses_a_file_that_is_not_from_embed(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not an embeddings file"):
        run_verify(VerifyConfig(embeddings=tmp_path / "x.npz", cuts=tmp_path / "c.jsonl.gz"))
    np.savez(tmp_path / "y.npz", other=np.zeros(3))
    with pytest.raises(UserError, match="not an embeddings file"):
        run_verify(VerifyConfig(embeddings=tmp_path / "y.npz", cuts=tmp_path / "c.jsonl.gz"))
