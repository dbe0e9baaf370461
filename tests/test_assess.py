"""assess / correlate / live indicators: the pool, the join, the coefficients, the live log."""

from __future__ import annotations

import json
import math
from itertools import combinations, product
from pathlib import Path

import numpy as np
import pytest
from conftest import write_audio
from lhotse import CutSet

from speechssl.audio.io import recording
from speechssl.errors import UserError
from speechssl.indicators.assess import expand_upstreams, run_of, select_pool
from speechssl.indicators.correlation import rank_correlation
from speechssl.indicators.rows import checkpoint_key, read_indicator_rows, row_key
from speechssl.recipes.assess import AssessConfig, run_assess
from speechssl.recipes.correlate import CorrelateConfig, run_correlate

pytestmark = pytest.mark.usefixtures("one_thread")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, written out (ties share the mean of their positions)."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = np.empty(len(x))
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _kendall_b(x, y) -> float:
    conc = disc = tx = ty = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif dx == dy:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def test_rank_correlation_matches_textbook_formulas():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 15).astype(float)  # ties on purpose
    y = x + rng.normal(0, 2, 15)
    c = rank_correlation(x, y, n_boot=200, seed=0)
    rx, ry = _ranks(x), _ranks(y)
    pearson_of_ranks = np.corrcoef(rx, ry)[0, 1]
    assert c.spearman == pytest.approx(pearson_of_ranks, abs=1e-12)
    assert c.kendall == pytest.approx(_kendall_b(x, y), abs=1e-12)
    assert c.spearman_lo <= c.spearman <= c.spearman_hi
    assert c.n == 15


def test_rank_correlation_drops_non_finite_pairs_and_needs_three():
    c = rank_correlation([1, 2, math.nan, 4], [1, 2, 3, math.nan])
    assert c.n == 2 and math.isnan(c.spearman)
    perfect = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], n_boot=50)
    assert perfect.spearman == pytest.approx(1.0) and perfect.kendall == pytest.approx(1.0)


def _clustered(n_runs: int, per_run: int, seed: int):
    """Runs whose checkpoints are near copies of each other: n_runs points of information."""
    rng = np.random.default_rng(seed)
    xr, noise = rng.normal(size=n_runs), rng.normal(size=n_runs)
    x = np.repeat(xr, per_run) + 0.01 * rng.normal(size=n_runs * per_run)
    y = np.repeat(xr + noise, per_run) + 0.01 * rng.normal(size=n_runs * per_run)
    return x, y, [f"run{i}" for i in range(n_runs) for _ in range(per_run)]


def _every_cluster_resample(x, y, groups) -> np.ndarray:
    """Spearman's rho of every one of the G^G equally likely draws of G runs (brute force)."""
    runs = sorted(set(groups))
    members = {r: [i for i, g in enumerate(groups) if g == r] for r in runs}
    rhos = []
    for draw in product(runs, repeat=len(runs)):
        i = [m for r in draw for m in members[r]]
        rhos.append(np.corrcoef(_ranks(x[i]), _ranks(y[i]))[0, 1])
    return np.array(rhos)


def test_interval_resamples_whole_runs_like_a_brute_force_cluster_bootstrap():
    x, y, groups = _clustered(n_runs=5, per_run=3, seed=0)
    exact = _every_cluster_resample(x, y, groups)
    c = rank_correlation(x, y, n_boot=1000, seed=0, groups=groups)
    assert c.bootstrap == "runs" and c.runs == 5 and c.n == 15
    # 1000 draws put the 2.5% / 97.5% quantiles within the exact 1-5% / 95-99% quantiles
    assert np.percentile(exact, 1) <= c.spearman_lo <= np.percentile(exact, 5)
    assert np.percentile(exact, 95) <= c.spearman_hi <= np.percentile(exact, 99)
    naive = rank_correlation(x, y, n_boot=1000, seed=0)  # 15 "independent" points
    assert naive.bootstrap == "checkpoints"
    assert c.spearman_hi - c.spearman_lo > 1.5 * (naive.spearman_hi - naive.spearman_lo)
    assert c.spearman == naive.spearman and c.kendall == naive.kendall  # only intervals change


def test_one_checkpoint_per_run_resamples_checkpoints_and_few_runs_give_no_interval():
    x, y, _ = _clustered(n_runs=8, per_run=1, seed=1)
    own = rank_correlation(x, y, n_boot=200, seed=3, groups=[f"r{i}" for i in range(8)])
    assert own == rank_correlation(x, y, n_boot=200, seed=3)
    assert own.bootstrap == "checkpoints" and own.runs == 8
    x, y, groups = _clustered(n_runs=2, per_run=4, seed=1)
    few = rank_correlation(x, y, n_boot=200, groups=groups)
    assert few.bootstrap == "runs" and few.runs == 2 and math.isfinite(few.spearman)
    assert math.isnan(few.spearman_lo) and math.isnan(few.kendall_hi)


def test_old_rows_are_read_under_the_current_names(tmp_path):
    row = {"upstream": "fbank", "run": "fbank", "step": None, "layer": 0, "inertia": 2.5}
    (tmp_path / "indicators.jsonl").write_text(json.dumps(row) + "\n")
    (got,) = read_indicator_rows(tmp_path)
    assert got["inertia_per_frame"] == 2.5 and "inertia" not in got


def test_run_of_a_checkpoint_is_its_run_folder():
    assert run_of("/x/r1/checkpoints/step-000300") == "/x/r1"
    assert run_of("fbank") == "fbank" and run_of("/x/hf-model") == "/x/hf-model"


class _FakeCut:
    def __init__(self, id: str, duration: float):
        self.id, self.duration = id, duration


def _cuts(n: int, seconds: float) -> list[_FakeCut]:
    return [_FakeCut(f"c{i:02d}", seconds) for i in range(n)]


def test_pool_is_seeded_sized_and_order_free():
    cuts = _cuts(40, 30.0)  # 20 min
    pool = select_pool(cuts, hours=5 / 60, seed=1)
    total = sum(c.duration for c in pool)
    assert 5 * 60 <= total < 5 * 60 + 30
    assert [c.id for c in select_pool(cuts[::-1], 5 / 60, 1)] == [c.id for c in pool]
    assert [c.id for c in select_pool(cuts, 5 / 60, 2)] != [c.id for c in pool]
    assert len(select_pool(cuts, hours=10, seed=0)) == 40
    with pytest.raises(UserError):
        select_pool([], 1.0, 0)


def test_run_folder_expands_to_its_checkpoints(tmp_path):
    run = tmp_path / "run"
    for step in (200, 100):
        d = run / "checkpoints" / f"step-{step:06d}"
        d.mkdir(parents=True)
        (d / "model.json").write_text("{}")
    got = expand_upstreams([str(run), "fbank"])
    assert [(c.run, c.step) for c in got] == [("run", 100), ("run", 200), ("fbank", None)]


@pytest.fixture
def manifest(tmp_path) -> Path:
    cuts = []
    for i in range(6):
        path = tmp_path / "audio" / f"a{i}.wav"
        write_audio(path, seconds=1.0, freq=150 + 40 * i)
        cuts.append(recording(path, recording_id=f"a{i}").to_cut())
    out = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(out)
    return out


def test_assess_writes_rows_for_each_layer_and_a_report(manifest, tmp_path):
    cfg = AssessConfig(
        upstream=["fbank", "mfcc"], cuts=[manifest], out=tmp_path / "assess", hours=1.0
    )
    cfg.indicators.k = 8
    cfg.indicators.kmeans_frames = 2000
    cfg.indicators.silhouette_frames = 300
    rows = run_assess(cfg)
    assert {(r["upstream"], r["layer"]) for r in rows} == {("fbank", 0), ("mfcc", 0)}
    assert all(math.isfinite(r["rankme"]) and r["rankme"] > 1 for r in rows)
    assert read_indicator_rows(tmp_path / "assess") == json.loads(json.dumps(rows))
    report = (tmp_path / "assess" / "report.md").read_text()
    assert "rankme" in report and (tmp_path / "assess" / "rankme.png").is_file()


def _fake_run(root: Path, name: str, steps: list[int], losses: list[float]) -> list[Path]:
    run = root / name
    ckpts = []
    for s in steps:
        d = run / "checkpoints" / f"step-{s:06d}"
        d.mkdir(parents=True)
        (d / "model.json").write_text("{}")
        ckpts.append(d)
    with (run / "metrics.jsonl").open("w") as f:
        for s, loss in zip(steps, losses, strict=True):
            f.write(json.dumps({"step": s, "loss": loss}) + "\n")
    return ckpts


def _assessed_and_probed(root: Path, ckpts: list[Path], rankme: list[float], acc: list[float]):
    """An assess folder with one rankme row per checkpoint and a digit probe result for each."""
    assess = root / "assess"
    assess.mkdir()
    with (assess / "indicators.jsonl").open("w") as f:
        for c, r in zip(ckpts, rankme, strict=True):
            step = int(c.name.split("-")[1])
            row = {"upstream": str(c), "run": c.parent.parent.name, "step": step, "layer": 0,
                   "rankme": r}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    probes = root / "probes"
    for i, (c, a) in enumerate(zip(ckpts, acc, strict=True)):
        d = probes / f"p{i}"
        d.mkdir(parents=True)
        result = {
            "task": "digit",
            "kind": "utterance",
            "upstream": str(c),
            "summary": {"accuracy": {"mean": a, "std": None}},
        }
        (d / "results.json").write_text(json.dumps(result))
    return assess, probes


def test_correlate_joins_indicators_probes_and_loss(tmp_path):
    ckpts = _fake_run(tmp_path, "r1", [10, 20, 30, 40, 50, 60], [5, 4, 4.5, 3, 2, 2.5])
    acc = [0.50, 0.60, 0.55, 0.70, 0.80, 0.75]  # follows -loss exactly in rank
    rankme = [3.0, 1.0, 6.0, 2.0, 5.0, 4.0]  # unrelated
    assess, probes = _assessed_and_probed(tmp_path, ckpts, rankme, acc)
    out = run_correlate(
        CorrelateConfig(
            assess=[assess], probes=[probes], out=tmp_path / "corr", bootstrap=100, loss_window=5
        )
    )
    by = {r["measure"]: r for r in out["results"]}
    assert by["-loss"]["spearman"] == pytest.approx(1.0)
    expected = np.corrcoef(_ranks(np.array(rankme)), _ranks(np.array(acc)))[0, 1]
    assert by["rankme"]["spearman"] == pytest.approx(expected)
    assert (tmp_path / "corr" / "scatter-digit.png").is_file()
    # six checkpoints of one run are one run's worth of evidence: no interval
    assert out["bootstrap"] == {"unit": "runs", "runs": 1, "resamples": 100}
    assert math.isnan(by["rankme"]["spearman_lo"])
    assert "needs 3+ runs (here 1)" in (tmp_path / "corr" / "report.md").read_text()


def test_correlate_resamples_runs_and_says_so(tmp_path):
    x, y, _ = _clustered(n_runs=4, per_run=2, seed=2)
    ckpts = [c for i in range(4) for c in _fake_run(tmp_path, f"r{i}", [10, 20], [1.0, 0.5])]
    assess, probes = _assessed_and_probed(tmp_path, ckpts, list(x), list(y / 10 + 0.5))
    out = run_correlate(
        CorrelateConfig(assess=[assess], probes=[probes], out=tmp_path / "corr", bootstrap=200)
    )
    groups = [run_of(str(c)) for c in ckpts]
    assert [out["points"][str(c)]["run"] for c in ckpts] == groups
    assert out["bootstrap"] == {"unit": "runs", "runs": 4, "resamples": 200}
    (row,) = [r for r in out["results"] if r["measure"] == "rankme"]
    ref = rank_correlation(x, y, 200, 0, groups)
    assert (row["bootstrap"], row["spearman_lo"], row["spearman_hi"]) == (
        "runs", ref.spearman_lo, ref.spearman_hi)  # fmt: skip
    saved = json.loads((tmp_path / "corr" / "correlations.json").read_text())
    assert saved["bootstrap"]["unit"] == "runs"
    report = (tmp_path / "corr" / "report.md").read_text()
    assert "200 resamples of the 4 runs, each with all its checkpoints" in report


def test_correlate_refuses_when_nothing_joins(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "indicators.jsonl").write_text(
        json.dumps({"upstream": "x", "run": "x", "step": 1, "layer": 0, "rankme": 1.0}) + "\n"
    )
    (tmp_path / "p").mkdir()
    with pytest.raises(UserError, match="both indicators and probe"):
        run_correlate(
            CorrelateConfig(assess=[tmp_path / "a"], probes=[tmp_path / "p"], out=tmp_path / "o")
        )


def test_assess_resumes_and_only_does_new_checkpoints(manifest, tmp_path, monkeypatch):
    import speechssl.indicators.assess as library

    calls = []
    real = library.assess_checkpoint

    def counting(ckpt, *args, **kwargs):
        calls.append(ckpt.spec)
        return real(ckpt, *args, **kwargs)

    monkeypatch.setattr(library, "assess_checkpoint", counting)

    def cfg(upstreams, k=8):
        c = AssessConfig(upstream=upstreams, cuts=[manifest], out=tmp_path / "a", hours=1.0)
        c.indicators.k, c.indicators.indicators = k, ["rankme", "inertia_per_frame"]
        return c

    first = run_assess(cfg(["fbank"]))
    second = run_assess(cfg(["fbank", "mfcc"]))
    assert calls == ["fbank", "mfcc"]  # fbank was not assessed twice
    assert second[0] == first[0]
    run_assess(cfg(["fbank"], k=4))  # other settings: everything again
    assert calls == ["fbank", "mfcc", "fbank"]


def test_assess_resume_knows_a_checkpoint_however_it_is_spelt(manifest, tmp_path, monkeypatch):
    """A rerun from another folder, or with ``./`` or a trailing slash, must not re-assess."""
    import speechssl.indicators.assess as library
    from speechssl.indicators.rows import checkpoint_key

    (step,) = _fake_run(tmp_path / "runs", "r", [10], [1.0])
    calls = []

    def fake(ckpt, *args, **kwargs):
        calls.append(ckpt.spec)
        row = {"upstream": ckpt.spec, "checkpoint": checkpoint_key(ckpt.spec), "run": "r",
               "step": 10, "layer": 0, "rankme": 1.0}  # fmt: skip
        return [row], 0.1

    monkeypatch.setattr(library, "assess_checkpoint", fake)
    monkeypatch.setattr(library, "select_pool", lambda cuts, hours, seed: cuts)

    def cfg(upstream):
        c = AssessConfig(upstream=[upstream], cuts=[manifest], out=tmp_path / "a", hours=1.0)
        c.indicators.indicators = ["rankme"]
        return c

    run_assess(cfg(str(step)))
    monkeypatch.chdir(tmp_path / "runs")
    run_assess(cfg("./r/checkpoints/step-000010/"))
    assert len(calls) == 1, calls


def test_correlate_matches_run_folders_and_spellings_by_resolved_path(tmp_path, monkeypatch):
    """Defect 1 of issue 15: `probe --upstream runs/x` did not join the assess rows of x's
    checkpoints, and a spelling like `./runs/x` only joined by luck of the working directory."""
    monkeypatch.chdir(tmp_path)
    runs = [_fake_run(tmp_path / "runs", f"r{i}", [10, 20], [1.0, 0.5]) for i in range(3)]
    with open("indicators.jsonl", "w") as f:
        for i, ckpts in enumerate(runs):
            for j, c in enumerate(ckpts):
                spec = f"./runs/r{i}/checkpoints/{c.name}"  # as an old assess wrote it
                f.write(json.dumps({"upstream": spec, "run": f"r{i}", "step": 10 * (j + 1),
                                    "layer": 0, "rankme": float(i + j)}) + "\n")  # fmt: skip
    specs = [str(tmp_path / "runs" / f"r{i}" / "checkpoints" / "step-000010") for i in range(3)]
    specs += [f"runs/r{i}/" for i in range(3)]  # run folders: their latest step, step-000020
    for n, spec in enumerate(specs):
        d = tmp_path / "probes" / f"p{n}"
        d.mkdir(parents=True)
        result = {"task": "digit", "kind": "utterance", "upstream": spec,
                  "summary": {"accuracy": {"mean": 0.1 * n, "std": None}}}  # fmt: skip
        (d / "results.json").write_text(json.dumps(result))
    out = run_correlate(
        CorrelateConfig(
            assess=[Path("indicators.jsonl")],
            probes=[Path("probes")],
            out=Path("corr"),
            bootstrap=50,
        )  # fmt: skip
    )
    assert len(out["checkpoints"]) == 6
    assert out["bootstrap"]["runs"] == 3
    assert {p["run"] for p in out["points"].values()} == {
        str((tmp_path / "runs" / f"r{i}").resolve()) for i in range(3)
    }


def test_checkpoint_key_is_one_spelling_per_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (step,) = _fake_run(tmp_path, "runs/x", [7], [1.0])
    key = str(step.resolve())
    assert {checkpoint_key(s) for s in ("./runs/x", "runs/x/", str(tmp_path / "runs" / "x"))} == {
        key
    }
    assert checkpoint_key("runs/x/checkpoints/step-000007") == key
    assert checkpoint_key("fbank") == "fbank"
    assert checkpoint_key("./gone/step-1/") == "gone/step-1"
    # a key recorded when the row was written wins over re-resolving from here
    assert (
        row_key({"upstream": "./runs/x", "checkpoint": "/elsewhere/step-7"}) == "/elsewhere/step-7"
    )
    assert row_key({"upstream": "./runs/x"}) == key


def test_assess_shows_no_bar_off_a_terminal_and_logs_each_checkpoint(manifest, tmp_path, capsys):
    """Was: a tqdm bar written to any stderr once there were two upstreams (the others show
    bars on a terminal only)."""
    cfg = AssessConfig(upstream=["fbank", "mfcc"], cuts=[manifest], out=tmp_path / "a", hours=1.0)
    cfg.indicators.k, cfg.indicators.indicators = 8, ["rankme"]
    run_assess(cfg)
    assert "\r" not in capsys.readouterr().err
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "assessed fbank in" in log and "assessed mfcc in" in log


def test_correlate_from_another_directory_uses_the_recorded_checkpoints(tmp_path, monkeypatch):
    runs = [_fake_run(tmp_path / "runs", f"r{i}", [10, 20], [1.0, 0.5]) for i in range(3)]
    ckpts = [c for r in runs for c in r]
    assess, probes = _assessed_and_probed(tmp_path, ckpts, [1.0, 2, 3, 4, 5, 6], [0.1] * 6)
    rows = [json.loads(line) for line in (assess / "indicators.jsonl").read_text().splitlines()]
    with (assess / "indicators.jsonl").open("w") as f:  # as assess now writes them, from tmp_path
        for r, c in zip(rows, ckpts, strict=True):
            r["upstream"], r["checkpoint"] = str(c.relative_to(tmp_path)), checkpoint_key(str(c))
            f.write(json.dumps(r) + "\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = CorrelateConfig(assess=[assess], probes=[probes], out=tmp_path / "c", loss_window=5)
    out = run_correlate(cfg)
    assert len(out["checkpoints"]) == 6
    assert [p["loss"] for p in out["points"].values()] == [1.0, 0.5] * 3
