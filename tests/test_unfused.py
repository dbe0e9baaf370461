"""UnFuSeD (method E): whitening and clustering against numpy/sklearn/faiss, the BYOL-A student,
a tiny end-to-end run with stage skipping, and the bad inputs."""

from __future__ import annotations

import dataclasses
import json

import faiss
import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.cli import main
from speechssl.data.batching import get_label
from speechssl.data.manifest import Row, build_cutset, load_cuts, save_cuts
from speechssl.errors import UserError
from speechssl.kmeans.whiten import (
    cluster_embeddings,
    fit_whitening,
    l2_normalize,
    label_agreement,
)
from speechssl.models.byola_cnn import ByolaCnn
from speechssl.models.ecapa import EcapaTdnn
from speechssl.models.encoder_config import EcapaConfig, ResNetConfig
from speechssl.models.registry import load_upstream, save_upstream
from speechssl.models.student import build_student, student_blocks
from speechssl.models.student_config import ByolaCnnConfig, StudentSection
from speechssl.recipes.unfused import (
    ClusterSection,
    DistillSection,
    FinetuneSection,
    UnfusedConfig,
    labelled_subset,
    run_unfused,
    teacher_embeddings,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# -- whitening and clustering -------------------------------------------------------------------


def _correlated(n=300, d=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 5


def test_whitened_covariance_is_identity_and_matches_the_svd_up_to_sign():
    x = _correlated()
    w = fit_whitening(x, dims=6)
    z = w.apply(x)
    assert z.shape == (300, 6)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(6), atol=1e-10)
    # reference: SVD of the centred data; whitened = U * sqrt(n), column signs free
    centred = x - x.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:6].T / (s[:6] / np.sqrt(len(x)))
    signs = np.sign(np.sum(z * ref, 0))
    np.testing.assert_allclose(z, ref * signs, atol=1e-8)
    np.testing.assert_allclose(w.eigenvalues, s[:6] ** 2 / len(x), rtol=1e-10)


def test_whitening_matches_faiss_pca_with_eigen_power_minus_half():
    """The released code's faiss PCAMatrix(d, 128, -0.5): the same directions, scaled by
    1/sqrt(n) (its eigenvalues are of the scatter matrix); L2 normalisation removes that."""
    x = _correlated(n=200, d=8, seed=3).astype(np.float32)
    pca = faiss.PCAMatrix(8, 5, -0.5)
    pca.train(x)
    theirs = l2_normalize(pca.apply(x))
    ours = l2_normalize(fit_whitening(x, dims=5).apply(x))
    signs = np.sign(np.sum(ours * theirs, 0))
    # row-normalised vectors of 5 columns: column signs still act independently
    np.testing.assert_allclose(ours, theirs * signs, atol=1e-4)


def test_fewer_utterances_than_dims_keeps_the_rank():
    x = np.random.default_rng(0).normal(size=(5, 20))
    w = fit_whitening(x, dims=128)
    assert w.dims == 4  # centred rank n - 1
    np.testing.assert_allclose(np.cov(w.apply(x).T, bias=True), np.eye(4), atol=1e-8)
    assert fit_whitening(np.random.default_rng(1).normal(size=(50, 3)), 128).dims == 3


def test_clusters_find_separated_groups_and_are_seeded():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    truth = np.repeat(np.arange(3), 20)
    x = centres[truth] + rng.normal(size=(60, 16))
    a = cluster_embeddings(x, k=3, dims=8, seed=0)
    assert sorted(a.sizes()) == [20, 20, 20]
    assert label_agreement(a.labels, truth)["nmi"] == pytest.approx(1.0)
    b = cluster_embeddings(x, k=3, dims=8, seed=0)
    assert np.array_equal(a.labels, b.labels)
    with pytest.raises(UserError, match="only 60 utterances"):
        cluster_embeddings(x, k=61)


def test_label_agreement_against_sklearn_and_a_hand_purity():
    from sklearn.metrics import normalized_mutual_info_score

    pseudo, true = [0, 0, 1, 1, 1, 2], ["a", "a", "a", "b", "b", "b"]
    got = label_agreement(pseudo, true)
    assert got["purity"] == pytest.approx(5 / 6)  # cluster 0: a a; 1: a b b; 2: b
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(true, pseudo))


# -- the students -----------------------------------------------------------------------------

TINY_BYOLA = ByolaCnnConfig(n_mels=16, channels=4, dim=16)


@pytest.mark.parametrize("kind", ["byola", "ecapa", "resnet"])
def test_student_blocks_give_embed_and_a_batch_embeds_like_each_utterance(kind):
    torch.manual_seed(0)
    section = StudentSection(
        kind=kind, byola=TINY_BYOLA,
        ecapa=EcapaConfig(channels=16, emb_dim=8, n_mels=20, mfa_dim=24, scale=2, attention_dim=8),
        resnet=ResNetConfig(base_width=4, blocks=[1, 1], emb_dim=8, n_mels=16, attention_dim=4),
    )  # fmt: skip
    enc = build_student(section).eval()
    wave, lengths = torch.randn(2, 16000), torch.tensor([16000, 7000])
    with torch.no_grad():
        feats, emb = student_blocks(enc, wave, lengths)
        alone = enc.embed(wave[1:, :7000])
        assert torch.allclose(emb, enc.embed(wave, lengths), atol=1e-6)
        assert torch.allclose(emb[1], alone[0], atol=1e-4)
        feats_alone, _ = student_blocks(enc, wave[1:, :7000])
    assert len(feats) == (3 if kind != "resnet" else 2)
    for f, g in zip(feats, feats_alone, strict=True):
        assert torch.allclose(f[1], g[0], atol=1e-4)


def test_byola_cnn_is_the_released_size_and_round_trips(tmp_path):
    model = ByolaCnn()
    assert 5.2e6 < sum(p.numel() for p in model.parameters()) < 5.4e6  # LAPE: ~5.3M
    tiny = ByolaCnn(TINY_BYOLA)
    back = load_upstream(save_upstream(tiny, tmp_path / "byola"))
    assert isinstance(back, ByolaCnn)
    out = back(torch.randn(1, 8000))
    assert [h.shape[-1] for h in out.hidden_states] == [32, 16, 8, 16]


# -- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 tones of two classes from 8 speakers, and a tiny ECAPA teacher checkpoint."""
    root = tmp_path_factory.mktemp("unfused")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        t = np.arange(int(rng.uniform(0.6, 1.0) * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (250.0, 900.0)[i % 2] * t) + 0.01 * rng.standard_normal(t.size)
        path = root / f"u{i:02d}.flac"
        sf.write(path, x.astype(np.float32), 16000)
        rows.append(Row(path, {"tone": str(i % 2), "speaker": f"s{i % 8}"}, cut_id=path.stem))
    cuts, _ = build_cutset(rows, progress=False)
    save_cuts(cuts, root / "cuts.jsonl.gz")
    unlabelled = [Row(r.path, {"speaker": r.labels["speaker"]}, cut_id=r.cut_id) for r in rows]
    save_cuts(build_cutset(unlabelled, progress=False)[0], root / "nolabel.jsonl.gz")
    torch.manual_seed(0)
    teacher = EcapaTdnn(EcapaConfig(channels=8, emb_dim=8, n_mels=20, mfa_dim=16, scale=2,
                                    attention_dim=4))  # fmt: skip
    return root, save_upstream(teacher, root / "teacher")


def _cfg(corpus, out, **kw) -> UnfusedConfig:
    root, teacher = corpus
    base = dict(
        out=out, cuts=root / "cuts.jsonl.gz", label="tone", split_by="speaker", device="cpu",
        teacher=str(teacher),
        cluster=ClusterSection(k=3, dims=8),
        # larger than the tiny teacher (allowed, with a warning)
        student=StudentSection(kind="byola", byola=dataclasses.replace(TINY_BYOLA, dim=128)),
        distill=DistillSection(epochs=2, batch_size=4, crop_seconds=0.5),
        finetune=FinetuneSection(epochs=2, batch_size=4, crop_seconds=0.5),
    )  # fmt: skip
    cfg = UnfusedConfig(**{**base, **kw})
    cfg.train = dataclasses.replace(cfg.train, log_every=1, num_workers=0)
    return cfg


def _mtimes(out) -> dict[str, int]:
    names = ["teacher/embeddings.npz", "pseudo/clusters.json", "pseudo/cuts.jsonl.gz",
             "student/done.json", "finetune/results.json", "finetune/best/best.json"]  # fmt: skip
    return {n: (out / n).stat().st_mtime_ns for n in names}


@pytest.mark.filterwarnings("ignore:the student")
def test_end_to_end_writes_every_stage_and_a_rerun_skips_them(corpus, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(corpus, out)
    with pytest.warns(UserWarning, match="larger than the teacher"):
        r = run_unfused(cfg)
    # stage 1
    assert r["teacher"]["layer"] == "embed" and r["teacher"]["dim"] == 8
    # stage 2: the training split only, labelled 'pseudo', true labels kept
    pseudo = list(load_cuts(out / "pseudo" / "cuts.jsonl.gz"))
    train_n = r["finetune"]["split_sizes"]["train"]
    assert len(pseudo) == train_n == r["clusters"]["utterances"]
    assert {get_label(c, "pseudo") for c in pseudo} <= {0, 1, 2}
    assert all(get_label(c, "tone") in ("0", "1") for c in pseudo)
    c = r["clusters"]
    assert sum(c["sizes"]) == train_n and len(c["sizes"]) == 3
    assert 0 <= c["agreement"]["nmi"] <= 1 and 0.5 <= c["agreement"]["purity"] <= 1
    # stage 3: a student checkpoint that loads as the BYOL-A CNN
    assert isinstance(load_upstream(out / "student"), ByolaCnn)
    metrics = [
        json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("kl" in m and "ce_heads" in m for m in metrics)
    # stage 4: selected on dev, tested once
    f = r["finetune"]
    assert f["selection"] == "dev" and 0 <= f["test_accuracy"] <= 1
    assert f["label_fraction"] == 1.0 and f["labelled"] == train_n
    assert (
        json.loads((out / "finetune" / "best" / "best.json").read_text())["step"]
        == f["selected_step"]
    )
    assert json.loads((out / "results.json").read_text())["finetune"] == f

    before = _mtimes(out)
    checkpoints = sorted(p.name for p in (out / "student" / "checkpoints").iterdir())
    again = run_unfused(cfg)
    assert _mtimes(out) == before
    assert sorted(p.name for p in (out / "student" / "checkpoints").iterdir()) == checkpoints
    assert again["finetune"] == f and again["clusters"] == r["clusters"]

    # an unfinished stage 4 is redone from its checkpoints; earlier stages stay skipped
    (out / "finetune" / "results.json").unlink()
    third = run_unfused(cfg)
    after = _mtimes(out)
    assert all(after[n] == before[n] for n in before if not n.startswith("finetune/results"))
    assert third["finetune"]["test_accuracy"] == f["test_accuracy"]

    # an interrupted stage 3 continues from its checkpoints (here: already at the last step)
    (out / "student" / "done.json").unlink()
    run_unfused(cfg)
    assert (out / "student" / "done.json").is_file()
    assert sorted(p.name for p in (out / "student" / "checkpoints").iterdir()) == checkpoints

    # new pseudo-labels: a student trained on the old ones is not silently reused
    cfg.cluster = dataclasses.replace(cfg.cluster, k=2)
    with pytest.raises(UserError, match="made from other pseudo-labels or student"):
        run_unfused(cfg)


@pytest.mark.filterwarnings("ignore:the student")
def test_stages_1_to_3_without_labels(corpus, tmp_path):
    root, _ = corpus
    cfg = _cfg(corpus, tmp_path / "nolabel", cuts=root / "nolabel.jsonl.gz", label=None,
               finetune=FinetuneSection(mode="none"))  # fmt: skip
    r = run_unfused(cfg)
    assert r["clusters"]["utterances"] == 16 and "agreement" not in r["clusters"]
    assert "finetune" not in r and (tmp_path / "nolabel" / "student" / "done.json").is_file()


def test_a_teacher_without_embedding_needs_a_layer(corpus, tmp_path):
    root, _ = corpus
    cuts = list(load_cuts(root / "cuts.jsonl.gz"))[:4]
    cfg = _cfg(corpus, tmp_path / "fb", teacher="fbank")
    with pytest.raises(UserError, match="no utterance embedding.*--teacher-layer"):
        teacher_embeddings(cfg, cuts, tmp_path / "fb" / "teacher")
    cfg.teacher_layer = 0
    emb, info = teacher_embeddings(cfg, cuts, tmp_path / "fb" / "teacher")
    assert emb.shape == (4, 80) and info["layer"] == 0 and info["parameters"] == 0
    cfg.teacher_layer = 1
    with pytest.raises(UserError, match="hidden states 0..0"):
        teacher_embeddings(cfg, cuts, tmp_path / "fb2" / "teacher")


def test_labelled_subset_is_stratified_seeded_and_keeps_every_class(corpus):
    root, _ = corpus
    cuts = list(load_cuts(root / "cuts.jsonl.gz"))  # 8 utterances of tone 0, 8 of tone 1
    assert labelled_subset(cuts, "tone", 1.0, 0) == cuts
    for fraction, per_class in ((0.25, 2), (0.5, 4), (0.1, 1), (0.01, 1)):  # round, at least 1
        sub = labelled_subset(cuts, "tone", fraction, seed=0)
        tones = [get_label(c, "tone") for c in sub]
        assert tones.count("0") == tones.count("1") == per_class
        positions = [cuts.index(c) for c in sub]
        assert positions == sorted(positions)  # a subset, in the original order
    draws = {tuple(c.id for c in labelled_subset(cuts, "tone", 0.25, s)) for s in range(6)}
    assert len(draws) > 1 and labelled_subset(cuts, "tone", 0.25, 3) == labelled_subset(
        cuts, "tone", 0.25, 3
    )


def _cli(corpus, out, *extra):
    root, teacher = corpus
    return main(["unfused", "--out", str(out), "--cuts", str(root / "cuts.jsonl.gz"),
                 "--teacher", str(teacher), "--device", "cpu", *extra])  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label", "tone", "--cluster.k", "50"], "--cluster.k 50 is larger than the"),
        (["--label", "emotion"], "has no label 'emotion'"),
        ([], "stage 4 fine-tunes on true labels"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_2(corpus, tmp_path, capsys, extra, message):
    assert _cli(corpus, tmp_path / "bad", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_help_lists_the_sections(capsys):
    with pytest.raises(SystemExit) as e:
        main(["unfused", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--teacher", "--teacher-layer", "--cluster.k", "--student.kind", "--distill.detach",
                   "--distill.temperature", "--finetune.mode", "--train.lr"):  # fmt: skip
        assert option in text
    assert "--train.resume" not in text
