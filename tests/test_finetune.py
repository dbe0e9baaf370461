"""Transfer: staged vs all-at-once fine-tuning freeze what they say; embed and verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from speechssl.data.manifest import Row, build_cutset, load_cuts, save_cuts
from speechssl.errors import UserError
from speechssl.evaluation.tasks import build_task
from speechssl.evaluation.verification import embed_cuts, score_speakers
from speechssl.models.ecapa import EcapaTdnn
from speechssl.models.encoder_config import EcapaConfig
from speechssl.models.finetune import LAST_AFFINE
from speechssl.models.registry import load_upstream, save_upstream
from speechssl.recipes.embed import EmbedConfig, run_embed
from speechssl.recipes.finetune import FinetuneConfig, run_finetune
from speechssl.recipes.verify import VerifyConfig, run_verify

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


def _test_split(setup, label="tone"):
    cuts, _ = setup
    task = build_task(cuts=cuts, label=label, split_by="speaker", seed=0)
    return list(task.splits["test"])


def test_staged_freezes_all_but_the_last_layers_bit_for_bit_in_stage_1(setup, tmp_path):
    start = _weights(setup[1])
    r = run_finetune(_cfg(setup, tmp_path / "staged", strategy="staged"))
    s1, s2 = _weights(tmp_path / "staged" / "stage1"), _weights(tmp_path / "staged" / "stage2")
    last = [k for k in start if k.split(".")[0] in LAST_AFFINE]
    frozen = [k for k in start if k.split(".")[0] not in LAST_AFFINE]
    assert last and frozen
    for k in frozen:  # parameters and batch-norm statistics alike: untouched in stage 1
        assert torch.equal(s1[k], start[k]), k
    trained = [k for k in last if start[k].is_floating_point() and "running" not in k]
    assert trained and all(not torch.equal(s1[k], start[k]) for k in trained)
    assert not torch.equal(s2["conv0.conv.weight"], start["conv0.conv.weight"])  # then all
    assert r["mode"] == "classify"
    # The reported accuracy is the final model's on the held-out speakers' cuts, each cut
    # embedded alone here (ECAPA in eval mode does not depend on the batch).
    enc = load_upstream(tmp_path / "staged" / "stage2")
    head = torch.nn.Linear(enc.emb_dim, 2)
    head.load_state_dict(
        {k.removeprefix("head."): v for k, v in s2.items() if k.startswith("head.")}
    )
    test = _test_split(setup)
    correct = 0
    with torch.inference_mode():
        for c in test:
            wave = torch.from_numpy(c.load_audio()[0])[None]
            pred = int(head(enc.embed(wave, torch.tensor([wave.shape[1]]))).argmax())
            correct += pred == ["0", "1"].index(c.supervisions[0].custom["tone"])
    assert r["accuracy"] == pytest.approx(correct / len(test))
    saved = json.loads((tmp_path / "staged" / "results.json").read_text())
    assert saved["accuracy"] == r["accuracy"]


def test_all_at_once_trains_everything(setup, tmp_path):
    start = _weights(setup[1])
    run_finetune(_cfg(setup, tmp_path / "all", strategy="all"))
    w = _weights(tmp_path / "all" / "all")
    params = [k for k in start if start[k].is_floating_point() and "running" not in k]
    changed = [k for k in params if not torch.equal(w[k], start[k])]
    assert len(changed) >= 0.9 * len(params)  # (a few may see no gradient in one epoch)
    assert not torch.equal(w["conv0.conv.weight"], start["conv0.conv.weight"])


def test_verify_mode_scores_held_out_speakers(setup, tmp_path):
    r = run_finetune(_cfg(setup, tmp_path / "v", label="speaker", eval="verify"))
    assert r["mode"] == "verify"
    train, test = set(r["speakers"]["train"]), set(r["speakers"]["test"])
    assert train and test and not train & test  # scored speakers were never trained on
    assert train | test <= {f"s{i}" for i in range(12)}  # (the dev split has the others)
    # the metrics are those of the final encoder's embeddings of the test speakers' cuts
    cuts = _test_split(setup, "speaker")
    assert {c.supervisions[0].custom["speaker"] for c in cuts} == test
    emb = embed_cuts(load_upstream(tmp_path / "v" / "stage2"), cuts)
    ref = score_speakers(emb, [c.supervisions[0].custom["speaker"] for c in cuts], seed=0)
    assert r["eer"] == pytest.approx(ref["eer"]) and r["trials"] == ref["trials"]


def test_encoder_without_embed_is_refused(setup, tmp_path):
    with pytest.raises(UserError, match="embed"):
        run_finetune(_cfg(setup, tmp_path / "x", upstream="fbank"))


def test_embed_writes_each_cuts_own_embedding_and_verify_reads_them_by_id(setup, tmp_path):
    cuts_path, ckpt = setup
    npz = run_embed(EmbedConfig(upstream=str(ckpt), cuts=cuts_path, out=tmp_path / "emb"))
    assert npz.suffix == ".npz"
    data = np.load(npz)
    cuts = list(load_cuts(cuts_path))
    assert data["cut_ids"].tolist() == [c.id for c in cuts]
    enc = load_upstream(ckpt)
    with torch.inference_mode():
        for row, c in zip(data["embeddings"], cuts, strict=True):
            wave = torch.from_numpy(c.load_audio()[0])[None]
            alone = enc.embed(wave, torch.tensor([wave.shape[1]]))[0].numpy()
            np.testing.assert_allclose(row, alone, rtol=1e-4, atol=1e-5)
    # Planted embeddings, stored in another order than the manifest: one direction per
    # speaker gives EER 0 only if verify pairs each row with its own cut's speaker.
    speakers = sorted({c.supervisions[0].custom["speaker"] for c in cuts})
    order = np.random.default_rng(0).permutation(len(cuts))
    ids = [cuts[i].id for i in order]
    spk = [speakers.index(cuts[i].supervisions[0].custom["speaker"]) for i in order]
    planted = np.eye(len(speakers))[spk] + 0.01 * np.random.default_rng(1).standard_normal(
        (len(cuts), len(speakers))
    )
    np.savez(tmp_path / "p.npz", embeddings=planted.astype(np.float32), cut_ids=np.array(ids))
    r = run_verify(
        VerifyConfig(embeddings=tmp_path / "p.npz", cuts=cuts_path, out=tmp_path / "v.json")
    )
    assert r["eer"] == 0.0 and json.loads((tmp_path / "v.json").read_text()) == r
    same = np.ones((len(cuts), 4), np.float32)  # every cut alike: all scores tie
    np.savez(tmp_path / "s.npz", embeddings=same, cut_ids=np.array(ids))
    assert run_verify(VerifyConfig(embeddings=tmp_path / "s.npz", cuts=cuts_path))["eer"] == 0.5


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
