"""Conditional-independence pseudo-label selection: HSIC, downsampling, groups, recipe.

References written here, independently of the implementation: a textbook HSIC with explicit
loops and matrices (numpy), the published downsampler's formula with scipy's normal CDF, a
brute-force projection onto the simplex, finite differences.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_audio
from scipy.spatial.distance import pdist
from scipy.stats import norm

from speechssl.data.manifest import Row, build_cutset, save_cuts
from speechssl.errors import UserError
from speechssl.selection import conditional_hsic, fit_group, gaussian_downsample, sparsemax
from speechssl.selection.groups import _PairData
from speechssl.selection.hsic import class_statistics, downsample_weights, item_means
from speechssl.selection.items import PseudoLabelBackend

# ----------------------------------------------------------------------------- references


def textbook_class_hsic(x: np.ndarray, z: np.ndarray, sigma2: float, mode: str) -> float:
    """tr(K H L H) / (n - 1)^2 with explicit loops for K and L and dense H."""
    n = len(x)
    k = np.zeros((n, n))
    ll = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
            ll[i, j] = math.exp(-float(np.sum((z[i] - z[j]) ** 2)) / (2 * sigma2))
    c = 1.0 / n if mode == "standard" else 1.0 / n**2
    h = np.eye(n) - c * np.ones((n, n))
    return float(np.trace(k @ h @ ll @ h)) / (n - 1) ** 2


def textbook_utility(x, labels, z, mode, averaging="plain", kernel_l=None):
    """Average over classes with >= 4 usable items; z rows with NaN are unusable."""
    z = np.asarray(z, dtype=float).reshape(len(x), -1)
    ok = np.isfinite(z).all(1)
    if mode == "standard":
        zs = (z - z[ok].mean(0)) / z[ok].std(0)
        sigma2 = float(np.median(pdist(zs[ok]))) ** 2
    else:
        zs, sigma2 = z, 0.05
    vals, weights = [], []
    for y in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == y and ok[i]]
        if len(idx) <= 3:
            continue
        vals.append(textbook_class_hsic(x[idx], zs[idx], sigma2, mode))
        weights.append(1.0 if averaging == "plain" else len(idx))
    return float(np.average(vals, weights=weights))


def planted(seed: int = 0, classes: int = 4, per_class: int = 40, dim: int = 60):
    """Speech X = class mean + within-class variation u; z's independent of or driven by u."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.5, (classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    u = rng.normal(0, 1, (len(labels), dim))
    x = means[labels] + u
    z_indep = rng.normal(0, 1, len(labels)) + labels  # depends on Y only
    z_dep = u[:, 0] + u[:, 1] + 0.1 * rng.normal(0, 1, len(labels))  # on X within classes
    return x, [int(v) for v in labels], z_indep, z_dep


# ------------------------------------------------------------------------------- HSIC


@pytest.mark.parametrize("mode", ["standard", "reference"])
@pytest.mark.parametrize("averaging", ["plain", "weighted"])
def test_hsic_matches_textbook(mode, averaging):
    rng = np.random.default_rng(1)
    sizes = {"a": 5, "b": 9, "c": 3, "d": 12}  # "c" has 3 items: skipped
    labels = [y for y, n in sizes.items() for _ in range(n)]
    n = len(labels)
    x = rng.normal(0, 1, (n, 24)) + 2.0
    z1 = rng.normal(0, 0.3, n)
    z2 = rng.normal(0, 1, (n, 3))  # multi-dimensional (MFCC-like)
    z3 = rng.normal(0, 0.2, n)
    z3[[0, 1, 20, 21, 22, 23, 24, 25, 26, 27]] = np.nan  # "a" falls to 3 usable items
    values = {"z1": torch.tensor(z1), "z2": torch.tensor(z2), "z3": torch.tensor(z3)}
    out = conditional_hsic(
        torch.tensor(x),
        labels,
        values,
        mode=mode,
        averaging=averaging,
        permutations=0,
        interval="none",
    )
    for name, z in (("z1", z1), ("z2", z2), ("z3", z3)):
        ref = textbook_utility(x, labels, z, mode, averaging)
        assert out[name].utility == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert out["z1"].classes_used == 3 and out["z1"].classes_skipped == 1
    assert out["z1"].items == 26 and out["z1"].items_dropped == 3
    assert out["z3"].classes_used == 2 and out["z3"].classes_skipped == 2
    assert out["z3"].items == 9 + 4 and out["z3"].items_dropped == 29 - 13
    assert math.isnan(out["z1"].p_value) and math.isnan(out["z1"].low)


@pytest.mark.parametrize("mode", ["standard", "reference"])
def test_permutation_and_bootstrap_rows_match_loops(mode):
    rng = np.random.default_rng(2)
    n = 7
    x = rng.normal(0, 1, (n, 10)) + 1.0
    z = rng.normal(0, 1, n)
    k = torch.tensor(
        [
            [x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) for j in range(n)]
            for i in range(n)
        ]
    )
    logl = torch.tensor(-((z[:, None] - z[None, :]) ** 2) / (2 * 0.5))[None]
    perms = torch.stack(
        [torch.randperm(n, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    )
    boots = torch.randint(0, n, (6, n), generator=torch.Generator().manual_seed(9))
    stats = class_statistics(k, logl, mode, perms, boots, chunk_elements=100)  # several chunks
    assert stats.shape == (12, 1)
    c = 1.0 / n if mode == "standard" else 1.0 / n**2
    h = np.eye(n) - c * np.ones((n, n))
    kn, ln = k.numpy(), np.exp(logl[0].numpy())

    def stat(kk, lk):
        return np.trace(kk @ h @ lk @ h) / (n - 1) ** 2

    expected = [stat(kn, ln)]
    for p in perms.numpy():
        expected.append(stat(kn, ln[np.ix_(p, p)]))  # z permuted within the class
    for q in boots.numpy():
        expected.append(stat(kn[np.ix_(q, q)], ln[np.ix_(q, q)]))
    np.testing.assert_allclose(stats[:, 0].numpy(), expected, rtol=1e-10, atol=1e-14)


def test_planted_dependence_ranks_independent_first():
    x, labels, z_indep, z_dep = planted()
    out = conditional_hsic(
        torch.tensor(x),
        labels,
        {"dep": torch.tensor(z_dep), "indep": torch.tensor(z_indep)},
        permutations=200,
        seed=3,
    )
    ind, dep = out["indep"], out["dep"]
    assert ind.p_value > 0.05
    assert abs(ind.utility - ind.null_mean) < 3 * ind.null_std
    assert dep.p_value <= 1.5 / 201  # beyond every permutation
    assert dep.utility > ind.utility
    assert dep.utility > dep.null_mean + 5 * dep.null_std
    assert ind.low < ind.utility < ind.high and dep.low < dep.utility < dep.high
    assert sorted(out, key=lambda n: out[n].utility)[0] == "indep"
    again = conditional_hsic(
        torch.tensor(x),
        labels,
        {"dep": torch.tensor(z_dep)},
        permutations=50,
        interval="bootstrap",
        bootstrap=100,
        seed=4,
    )["dep"]
    assert again.utility == pytest.approx(dep.utility, rel=1e-12)  # draws leave it alone
    assert again.interval == "bootstrap" and again.low < again.utility < again.high
    assert again.high - again.low > dep.high - dep.low  # the bootstrap is the wider one


@pytest.mark.parametrize("mode", ["standard", "reference"])
@pytest.mark.parametrize("averaging", ["plain", "weighted"])
def test_default_jackknife_interval_matches_brute_force_leave_one_out(mode, averaging):
    # Brute force: drop each item of a class in turn and recompute that class's textbook HSIC
    # on the n - 1 others (kernels and bandwidth from all items, as the utility fixes them);
    # var_c = (n - 1) / n * sum (loo - mean)^2, var = sum_c w_c^2 var_c, utility +- z * sd.
    rng = np.random.default_rng(11)
    sizes = {"a": 6, "b": 9, "c": 3, "d": 7}  # "c" is skipped (3 items)
    labels = [y for y, n in sizes.items() for _ in range(n)]
    n_items = len(labels)
    x = rng.normal(0, 1, (n_items, 16)) + 1.0
    z = rng.normal(0, 1, (n_items, 2)) + 0.3 * x[:, :2]
    out = conditional_hsic(
        torch.tensor(x), labels, {"z": torch.tensor(z)}, mode=mode, averaging=averaging,
        permutations=0,
    )["z"]  # fmt: skip
    assert out.interval == "jackknife"
    if mode == "standard":
        zs = (z - z.mean(0)) / z.std(0)
        sigma2 = float(np.median(pdist(zs))) ** 2
    else:
        zs, sigma2 = z, 0.05
    weights, variances, values = [], [], []
    for y in sorted(sizes):
        idx = [i for i, lab in enumerate(labels) if lab == y]
        if len(idx) <= 3:
            continue
        n = len(idx)
        values.append(textbook_class_hsic(x[idx], zs[idx], sigma2, mode))
        loo = np.array(
            [
                textbook_class_hsic(
                    x[idx[:j] + idx[j + 1 :]], zs[idx[:j] + idx[j + 1 :]], sigma2, mode
                )
                for j in range(n)
            ]
        )
        variances.append((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
        weights.append(1.0 if averaging == "plain" else float(n))
    w = np.array(weights) / np.sum(weights)
    utility = float(w @ np.array(values))
    half = 1.959963984540054 * math.sqrt(float(np.sum(w**2 * np.array(variances))))
    assert half > 0
    assert out.utility == pytest.approx(utility, rel=1e-9)
    assert out.low == pytest.approx(utility - half, rel=1e-9, abs=1e-15)
    assert out.high == pytest.approx(utility + half, rel=1e-9, abs=1e-15)


def test_item_means_voiced_and_reference_zero_fill():
    values = torch.tensor([[[1.0], [2.0], [3.0], [9.0]], [[5.0], [5.0], [0.0], [0.0]]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    voiced = torch.tensor([[True, False, True, True], [False, False, False, False]])
    plain = item_means(values, mask)
    assert plain[:, 0].tolist() == [2.0, 5.0]
    v = item_means(values, mask, voiced, voiced_only=True)
    assert v[0, 0] == 2.0 and math.isnan(v[1, 0])  # no voiced frame: NaN, dropped later
    ref = item_means(values, mask, voiced, voiced_only=True, zero_unvoiced=True)
    assert ref[:, 0].tolist() == [pytest.approx(4.0 / 3.0), 0.0]


# ------------------------------------------------------------------- Gaussian downsampling


def published_downsample(feats: np.ndarray, n_out: int, ratio: float, slope: float) -> np.ndarray:
    """The published filter bank written out with scipy (frame j spans [j - 0.5, j + 0.5])."""
    t = feats.shape[0]
    means = np.linspace(0, t - 1, n_out)
    stds = np.array([min(k, n_out - 1 - k) for k in range(n_out)]) * slope + t * ratio
    edges = np.arange(t + 1) - 0.5
    w = np.zeros((n_out, t))
    for k in range(n_out):
        cdf = norm.cdf(edges, loc=means[k], scale=stds[k])
        w[k] = np.diff(cdf)
        w[k] /= w[k].sum()
    return w @ feats


def test_downsampling_matches_published_formula_and_ignores_padding():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(57, 40)), rng.normal(size=(23, 40))
    batch = torch.zeros(2, 57, 40, dtype=torch.float64)
    batch[0], batch[1, :23] = torch.tensor(a), torch.tensor(b)
    batch[1, 23:] = 1e6  # padding must not leak
    out = gaussian_downsample(batch, torch.tensor([57, 23]), n_out=30)
    assert out.shape == (2, 30, 40)
    np.testing.assert_allclose(out[0].numpy(), published_downsample(a, 30, 0.07, 0.1), rtol=1e-9)
    np.testing.assert_allclose(out[1].numpy(), published_downsample(b, 30, 0.07, 0.1), rtol=1e-9)
    ten = gaussian_downsample(torch.tensor(b), n_out=10)
    np.testing.assert_allclose(ten.numpy(), published_downsample(b, 10, 0.07, 0.1), rtol=1e-9)


def test_downsampling_constant_and_weights():
    const = torch.full((3, 80, 5), 2.5)
    out = gaussian_downsample(const, torch.tensor([80, 31, 1]), n_out=30)
    assert out.shape == (3, 30, 5)
    assert torch.allclose(out, torch.full_like(out, 2.5), atol=1e-5)
    w = downsample_weights(torch.tensor([80, 31, 1, 0]), 7, t_max=80)
    assert w.shape == (4, 7, 80)
    assert torch.allclose(w[:3].sum(-1), torch.ones(3, 7, dtype=torch.float64))
    assert (w[1, :, 31:] == 0).all() and (w[3] == 0).all()  # no frame: zero row
    assert (w >= 0).all()


# ---------------------------------------------------------------------------- sparsemax


def brute_force_simplex_projection(z: np.ndarray) -> np.ndarray:
    """argmin_{p in simplex} |p - z|^2 by trying every support."""
    best, best_d = None, np.inf
    for r in range(1, len(z) + 1):
        for s in itertools.combinations(range(len(z)), r):
            s = list(s)
            p = np.zeros_like(z)
            p[s] = z[s] - (z[s].sum() - 1) / len(s)
            if (p >= -1e-12).all():
                d = np.sum((p - z) ** 2)
                if d < best_d:
                    best, best_d = p, d
    return best


def test_sparsemax_is_the_simplex_projection():
    rng = np.random.default_rng(5)
    for scale in (0.1, 1.0, 3.0):
        z = rng.normal(0, scale, (6, 5))
        out = sparsemax(torch.tensor(z)).numpy()
        for row, ref in zip(out, z, strict=True):
            np.testing.assert_allclose(row, brute_force_simplex_projection(ref), atol=1e-12)
    cols = sparsemax(torch.tensor(z.T), dim=0).numpy().T
    np.testing.assert_allclose(cols, out, atol=1e-12)
    w = torch.tensor(rng.normal(0, 1, 5), requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: sparsemax(v) @ torch.arange(5.0, dtype=v.dtype), (w,))


# ------------------------------------------------------------------------------- groups


def test_group_kernel_is_the_weighted_product():
    x, labels, z_indep, z_dep = planted(seed=6, classes=3, per_class=7, dim=12)
    values = {"dep": torch.tensor(z_dep), "indep": torch.tensor(z_indep)}
    data = _PairData(torch.tensor(x), labels, values, "standard", "plain", 0, None)
    lam = np.array([0.3, 0.7])
    ours = float(data.utility(torch.tensor(lam)))
    # Textbook: L = L_dep^0.3 * L_indep^0.7 with each kernel built from standardised z.
    zs = [(z - z.mean()) / z.std() for z in (z_dep, z_indep)]
    s2 = [float(np.median(pdist(z[:, None]))) ** 2 for z in zs]
    vals = []
    for y in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == y]
        n = len(idx)
        k = np.array(
            [[x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) for j in idx] for i in idx]
        )
        ll = np.ones((n, n))
        for z, s, w in zip(zs, s2, lam, strict=True):
            ll *= np.exp(-((z[idx][:, None] - z[idx][None, :]) ** 2) / (2 * s)) ** w
        h = np.eye(n) - np.ones((n, n)) / n
        vals.append(np.trace(k @ h @ ll @ h) / (n - 1) ** 2)
    assert ours == pytest.approx(float(np.mean(vals)), rel=1e-9)
    single = conditional_hsic(torch.tensor(x), labels, values, permutations=0, interval="none")
    assert float(data.utility(torch.tensor([1.0, 0.0]))) == pytest.approx(single["dep"].utility)


@pytest.mark.parametrize("kind", ["softmax", "sparsemax"])
def test_group_weight_goes_to_the_conditionally_independent_candidate(kind):
    # Lower utility is better, so the fit moves weight away from the candidate that depends
    # on the speech within classes, towards the one that is independent of it given Y.
    x, labels, z_indep, z_dep = planted(seed=7, classes=4, per_class=30)
    values = {"dep": torch.tensor(z_dep), "indep": torch.tensor(z_indep)}
    res = fit_group(torch.tensor(x), labels, values, kind=kind, mode="standard", seed=1)
    w = dict(zip(res.names, res.weights, strict=True))
    assert sum(res.weights) == pytest.approx(1.0)
    assert w["indep"] > 0.6 > w["dep"]
    assert res.utility < res.start_utility
    assert list(res.selected())[0] == "indep"
    if kind == "sparsemax":
        assert w["dep"] == 0.0  # sparsemax can drop a candidate entirely


def test_group_reference_mode_lowers_its_utility():
    # The reference statistic is almost uncentred: ~ the mean of K * L within classes, so it
    # rewards within-class spread in raw units rather than independence; only check the fit.
    x, labels, z_indep, z_dep = planted(seed=7, classes=4, per_class=30)
    values = {"dep": torch.tensor(0.1 * z_dep), "indep": torch.tensor(0.1 * z_indep)}
    res = fit_group(torch.tensor(x), labels, values, kind="softmax", mode="reference", steps=200)
    assert sum(res.weights) == pytest.approx(1.0)
    assert res.utility < res.start_utility


# ------------------------------------------------------------------------------- recipe


def _frames(wave: torch.Tensor, lengths: torch.Tensor):
    n = torch.where(lengths >= 400, 1 + (lengths - 400) // 160, torch.zeros_like(lengths))
    t = max(int(n.max()), 0)
    fr = wave.unfold(1, 400, 160)[:, :t] if t else wave.new_zeros(len(wave), 0, 400)
    mask = torch.arange(t)[None, :] < n[:, None]
    return fr, mask


class StandIn:
    """A small extractor with the pseudolabels API: energy, zcr, a voiced-only 'f0', mfcc."""

    names = ("energy", "zcr", "f0", "mfcc", "logmel")

    @staticmethod
    def voiced_only(name: str) -> bool:
        return name == "f0"

    @staticmethod
    def extract(names, wave, lengths):
        fr, mask = _frames(wave, lengths)
        energy = torch.log(fr.square().mean(-1) + 1e-8)
        zcr = (torch.sign(fr[..., 1:]) != torch.sign(fr[..., :-1])).float().mean(-1)
        voiced = mask & (energy > -4.0)
        table = {
            "energy": energy,
            "zcr": zcr,
            "f0": torch.where(voiced, 8000.0 * zcr, 0.0),
            "mfcc": torch.stack([energy, zcr, energy * zcr], -1),
            "logmel": energy[..., None].repeat(1, 1, 4),
        }
        values = {n: (table[n] if table[n].dim() == 3 else table[n][..., None]) for n in names}
        return SimpleNamespace(values=values, mask=mask, voiced=voiced, warnings={})


@pytest.fixture
def tiny_cuts(tmp_path: Path) -> Path:
    rng = np.random.default_rng(8)
    rows = []
    spec = {"s1": (6, 150.0), "s2": (6, 260.0), "s3": (7, 400.0), "s4": (2, 500.0)}  # s4 skipped
    for spk, (count, f0) in spec.items():
        for i in range(count):
            p = tmp_path / "wav" / f"{spk}_{i}.wav"
            write_audio(p, seconds=float(rng.uniform(0.3, 0.7)), freq=f0 * rng.uniform(0.9, 1.1))
            rows.append(Row(p, {"speaker": spk, "gender": "x"}))
    # one too short for a frame (0.01 s): dropped and counted
    p = tmp_path / "wav" / "short.wav"
    write_audio(p, seconds=0.01)
    rows.append(Row(p, {"speaker": "s1", "gender": "x"}))
    cuts, _ = build_cutset(rows, progress=False, workers=1)
    return save_cuts(cuts, tmp_path / "cuts.jsonl.gz")


def test_select_recipe_end_to_end(tiny_cuts, tmp_path, monkeypatch, one_thread):
    from speechssl.recipes import select

    monkeypatch.setattr(
        "speechssl.selection.items.pseudolabel_backend",  # where select finds it when it runs
        lambda: PseudoLabelBackend(StandIn.names, StandIn.extract, StandIn.voiced_only),
    )
    cfg = select.SelectConfig(
        cuts=tiny_cuts,
        label="speaker",
        out=tmp_path / "run",
        permutations=30,
        groups=True,
        frames=10,
    )
    result = select.run_select(cfg)
    on_disk = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert on_disk["ranking"] == json.loads(json.dumps(result["ranking"]))
    names = [r["name"] for r in result["ranking"]]
    assert sorted(names) == ["energy", "f0", "zcr"]  # mfcc/logmel are baselines, not ranked
    assert [r["rank"] for r in result["ranking"]] == [1, 2, 3]
    for r in result["ranking"]:
        assert r["classes_skipped"] == 1 and r["classes_used"] == 3
        # a permutation p-value is (1 + count) / (1 + B) with 0 <= count <= B
        count = r["p_value"] * 31 - 1
        assert count == pytest.approx(round(count), abs=1e-4) and 0 <= round(count) <= 30
    assert result["counts"]["too_short"] == 1 and result["counts"]["items"] == 21
    assert {r["name"]: r["voiced_only"] for r in result["ranking"]}["f0"] is True
    for kind in ("softmax", "sparsemax"):
        assert sum(result["groups"][kind]["weights"]) == pytest.approx(1.0)
    assert set(result["timings"]) >= {"extract_s", "utility_s", "groups_s"}
    png = (tmp_path / "run" / "selection.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "run" / "selection.md").read_text()
    assert md.index(f"| 1 | {names[0]}") < md.index(f"| 3 | {names[2]}")
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.fixture
def planted_cuts(tmp_path: Path) -> Path:
    """4 speakers, each one exact tone frequency; the loudness varies within each speaker."""
    rng = np.random.default_rng(12)
    rows = []
    for s, freq in enumerate((180.0, 330.0, 610.0, 1100.0)):
        for i in range(10):
            t = np.arange(int(rng.uniform(0.4, 0.8) * 16000)) / 16000
            x = rng.uniform(0.02, 0.6) * np.sin(2 * np.pi * freq * t)
            p = tmp_path / "wav" / f"s{s}_{i}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x.astype(np.float32), 16000)
            rows.append(Row(p, {"speaker": f"s{s}"}))
    cuts, _ = build_cutset(rows, progress=False, workers=1)
    return save_cuts(cuts, tmp_path / "planted.jsonl.gz")


def test_select_ranks_the_pseudo_label_that_only_follows_the_class_first(
    planted_cuts, tmp_path, monkeypatch, one_thread
):
    # The zero-crossing rate of a pure tone is its frequency: a function of the speaker alone,
    # so independent of the speech given the speaker (the ideal candidate). The energy follows
    # the loudness, which changes the log-mel within each speaker: dependent.
    from speechssl.recipes import select

    monkeypatch.setattr(
        "speechssl.selection.items.pseudolabel_backend",  # where select finds it when it runs
        lambda: PseudoLabelBackend(StandIn.names, StandIn.extract, StandIn.voiced_only),
    )
    cfg = select.SelectConfig(
        cuts=planted_cuts, label="speaker", out=tmp_path / "run", permutations=100,
        candidates=["energy", "zcr"], frames=10,
    )  # fmt: skip
    ranking = select.run_select(cfg)["ranking"]
    by_name = {r["name"]: r for r in ranking}
    assert [r["name"] for r in ranking] == ["zcr", "energy"]
    assert by_name["energy"]["p_value"] <= 2 / 101  # beyond (almost) every permutation
    assert by_name["zcr"]["p_value"] > 0.05
    assert by_name["zcr"]["high"] < by_name["energy"]["low"]  # the intervals do not overlap


def test_select_recipe_user_errors(tiny_cuts, tmp_path, monkeypatch):
    from speechssl.recipes import select

    monkeypatch.setattr(
        "speechssl.selection.items.pseudolabel_backend",  # where select finds it when it runs
        lambda: PseudoLabelBackend(StandIn.names, StandIn.extract, StandIn.voiced_only),
    )
    with pytest.raises(UserError, match="unknown pseudo-label nope"):
        select.run_select(
            select.SelectConfig(
                cuts=tiny_cuts, label="speaker", out=tmp_path / "a", candidates=["f0", "nope"]
            )
        )
    with pytest.raises(UserError, match="no label 'emotion'.*speaker"):
        select.run_select(select.SelectConfig(cuts=tiny_cuts, label="emotion", out=tmp_path / "b"))
    with pytest.raises(UserError, match="permutations"):
        select.run_select(
            select.SelectConfig(
                cuts=tiny_cuts, label="speaker", out=tmp_path / "c", permutations=-1
            )
        )
