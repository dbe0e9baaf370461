"""k-means for HuBERT-style targets: ours (greedy or plain k-means++ + faiss) vs fairseq's choice.

fairseq's ``examples/hubert/simple_kmeans/learn_kmeans.py`` fits scikit-learn's
MiniBatchKMeans with init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
max_no_improvement=100, n_init=20, reassignment_ratio=0.0, init_size=None. We fit each
method on the same sample of frames and report wall time and the mean squared distance to the
nearest centroid (inertia per frame) on those frames and on held-out frames of the same pool
that no fit saw (what the labels of unseen audio pay).

Data sets (``--data``):
- ``real``: MFCC + deltas (39-d, 100 frames/s) of ../shared/data ravdess and
  librispeech-10spk, 7 neighbouring frames stacked (273-d), standardised with the fit sample's
  statistics and mapped to 256-d by a seeded random orthogonal projection (a stand-in for a
  256-d encoder layer); ``--frames`` fit frames and ``--held-out`` other frames drawn with
  seed 0. Falls back to a synthetic mixture when the data is missing (then says so).
- ``mixture``: the case of issue 13: 60,000 x 128 frames of a 200-component Gaussian mixture
  (means N(0, 4 I), unit noise), k = 200, plus 20,000 held-out frames of the same mixture.

    python benchmarks/bench_kmeans.py [--frames 200000] [--held-out 50000] [--k 500]
        [--n-iter 20 50] [--data mixture real] [--skip-n-init-20]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "2")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from common import DATA_ROOT, FAIRSEQ_KMEANS, RESULTS, header, load_average, write_result  # noqa: E402
from sklearn.cluster import MiniBatchKMeans  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from speechssl.kmeans import assign, fit_kmeans  # noqa: E402
from speechssl.kmeans.fit import seeding_trials  # noqa: E402
from speechssl.models.upstream import MfccUpstream  # noqa: E402

THREADS = 2
FAIRSEQ = {**FAIRSEQ_KMEANS, "compute_labels": False}
MIXTURE = {"frames": 60_000, "held_out": 20_000, "dim": 128, "components": 200, "k": 200}


@dataclass
class Frames:
    name: str
    fit: np.ndarray
    held_out: np.ndarray
    k: int
    what: str


@dataclass
class Row:
    method: str
    seconds: float
    fit_mse: float  # inertia per frame on the fit frames
    held_mse: float  # ... on the held-out frames


def real_frames(n_fit: int, n_held: int, dim: int, k: int, seed: int) -> Frames | None:
    files = []
    for corpus in ("ravdess", "librispeech-10spk"):
        files += sorted((DATA_ROOT / corpus).rglob("*.flac"))
    if not files:
        return None
    mfcc = MfccUpstream().eval()
    chunks = []
    with torch.inference_mode():
        for f in files:
            x, sr = sf.read(f, dtype="float32")
            assert sr == 16000
            c = mfcc(torch.from_numpy(x)[None])[0][0][0].numpy()
            if len(c) < 7:
                continue
            ctx = np.lib.stride_tricks.sliding_window_view(c, (7, c.shape[1]))[:, 0]
            chunks.append(ctx.reshape(len(ctx), -1))
    x = np.concatenate(chunks)
    total = len(x)
    rng = np.random.default_rng(seed)
    drawn = rng.permutation(total)
    n_fit = min(n_fit, total // 2)
    n_held = min(n_held, total - n_fit)
    fit_rows, held_rows = np.sort(drawn[:n_fit]), np.sort(drawn[n_fit : n_fit + n_held])
    mean, std = x[fit_rows].mean(0), x[fit_rows].std(0) + 1e-5
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))

    def project(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((((x[rows] - mean) / std) @ q[:, :dim]).astype(np.float32))

    what = (
        f"real speech: MFCC+deltas of {len(files)} files of ravdess + librispeech-10spk "
        f"({total} stacked frames), 7-frame context (273-d), standardised (fit-sample "
        f"statistics), random orthogonal projection to {dim}-d; {n_fit} fit frames and "
        f"{n_held} disjoint held-out frames drawn with seed {seed}"
    )
    return Frames("real speech", project(fit_rows), project(held_rows), k, what)


def mixture_frames(n_fit: int, n_held: int, dim: int, components: int, k: int, seed: int) -> Frames:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2, size=(components, dim))

    def draw(n: int) -> np.ndarray:
        return (means[rng.integers(0, components, n)] + rng.normal(size=(n, dim))).astype(
            np.float32
        )

    what = (
        f"synthetic: {components}-component Gaussian mixture in {dim}-d (means N(0, 4 I), unit "
        f"noise), {n_fit} fit frames + {n_held} held-out frames of the same mixture, seed {seed}"
    )
    return Frames(f"Gaussian mixture {n_fit} x {dim}", draw(n_fit), draw(n_held), k, what)


def mse(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(assign(x, centroids)[1].astype(np.float64).mean())


def measure(data: Frames, n_iters: list[int], n_inits: list[int]) -> list[Row]:
    rows = []
    for seeding in ("greedy", "plain"):
        trials = seeding_trials(seeding, data.k)
        for n_iter in n_iters:
            t0 = time.perf_counter()
            c, _ = fit_kmeans(data.fit, data.k, seed=0, n_iter=n_iter, local_trials=trials)
            dt = time.perf_counter() - t0
            per = f"{trials} candidate{'s' if trials > 1 else ''}/centre"
            name = f"ours: {seeding} k-means++ ({per}) + faiss, {n_iter} it."
            if seeding == "greedy":
                name += " (default)" if n_iter == 50 else ""
            rows.append(Row(name, dt, mse(data.fit, c), mse(data.held_out, c)))
            print(data.name, rows[-1], flush=True)
    for n_init in n_inits:
        with threadpool_limits(THREADS):
            t0 = time.perf_counter()
            km = MiniBatchKMeans(n_clusters=data.k, n_init=n_init, random_state=0, **FAIRSEQ)
            km.fit(data.fit)
            dt = time.perf_counter() - t0
        c = km.cluster_centers_.astype(np.float32)
        name = f"sklearn MiniBatchKMeans, fairseq settings, n_init={n_init}"
        if n_init != 20:
            name += " (fairseq uses 20)"
        rows.append(Row(name, dt, mse(data.fit, c), mse(data.held_out, c)))
        print(data.name, rows[-1], flush=True)
    return rows


def table(data: Frames, rows: list[Row]) -> list[str]:
    ref = [r for r in rows if "n_init=20" in r.method] or [r for r in rows if "sklearn" in r.method]
    base = ref[0]
    lines = [
        f"## {data.name}, k = {data.k}",
        "",
        f"- Data: {data.what}",
        f"- Reference row for the ratios: {base.method}",
        "",
        "| method | fit time (s) | inertia / frame, fit frames | inertia / frame, held-out "
        "| speed-up vs ref | fit vs ref | held-out vs ref |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.seconds:.1f} | {r.fit_mse:.4f} | {r.held_mse:.4f} | "
            f"{base.seconds / r.seconds:.1f}x | {100 * (r.fit_mse / base.fit_mse - 1):+.2f}% | "
            f"{100 * (r.held_mse / base.held_mse - 1):+.2f}% |"
        )
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000, help="fit frames (real speech)")
    ap.add_argument("--held-out", type=int, default=50_000, help="held-out frames (real speech)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=500, help="clusters (real speech)")
    ap.add_argument("--n-iter", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--data", nargs="+", choices=["mixture", "real"], default=["mixture", "real"])
    ap.add_argument("--skip-n-init-20", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    n_inits = [1] if args.skip_n_init_20 else [1, 20]

    def write(sections: list[tuple[Frames, list[Row]]]) -> None:  # after each data set
        lines = header("k-means: ours (greedy / plain k-means++ + faiss) vs fairseq HuBERT's "
                       "MiniBatchKMeans", THREADS)  # fmt: skip
        lines += [
            f"- faiss {faiss.__version__}; threads: {THREADS} (faiss OpenMP, torch, sklearn via "
            "threadpoolctl)",
            "- inertia / frame = mean squared distance to the nearest centroid; fit frames are "
            "the frames every method was fitted on, held-out frames are others of the same pool",
            f"- Load average at the end (machine shared with other jobs): {load_average()}",
            "",
        ]
        for data, rows in sections:
            lines += table(data, rows)
        write_result(RESULTS / "kmeans.md", lines)

    sections = []
    if "mixture" in args.data:
        m = MIXTURE
        got = mixture_frames(m["frames"], m["held_out"], m["dim"], m["components"], m["k"], 0)
        sections.append((got, measure(got, args.n_iter, n_inits)))
        write(sections)
    if "real" in args.data:
        got = real_frames(args.frames, args.held_out, args.dim, args.k, 0)
        if got is None:
            print("no real speech under", DATA_ROOT, "- using a synthetic mixture instead")
            got = mixture_frames(args.frames, args.held_out, args.dim, 1000, args.k, 0)
        sections.append((got, measure(got, args.n_iter, n_inits)))
        write(sections)


if __name__ == "__main__":
    main()
