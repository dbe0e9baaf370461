"""Peak memory of rank 0 in `speechssl kmeans fit`: the frame sample plus the fit on it.

Under torchrun every rank streams its share of the cuts and keeps only its part of the seeded
sample (1.2 x max_frames frames expected over all ranks); rank 0 gathers that sample and
fits on it. So rank 0's memory is bounded by max_frames and the feature dimension, not by
the corpus. This measures it: for each (frames, dim, k), a fresh process builds a float32
sample of 1.2 x frames x dim (what rank 0 gathers), trims it to ``frames`` and runs the fit
of the job (greedy k-means++ + Lloyd); its peak RSS is reported with the sample's size.

    python benchmarks/bench_kmeans_memory.py [--iters 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import resource, sys, time, numpy as np
from speechssl.kmeans.fit import fit_kmeans, seeding_trials, subsample_frames
n, d, k, iters = map(int, sys.argv[1:5])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = np.random.default_rng(0).standard_normal((int(1.2 * n), d), dtype=np.float32)
x = subsample_frames(x, n, 0)
t0 = time.perf_counter()
fit_kmeans(x, k, seed=0, n_iter=iters, local_trials=seeding_trials("greedy", k))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{base / 1024:.0f} {peak / 1024:.0f} {time.perf_counter() - t0:.1f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for n, d, k in [(200_000, 39, 100), (200_000, 256, 100), (500_000, 256, 100)]:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d), str(k), str(args.iters)],
                             check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
        base, peak, secs = float(out[0]), float(out[1]), float(out[2])
        sample = 1.2 * n * d * 4 / 2**20
        rows.append({"frames": n, "dim": d, "k": k, "sample_MiB": round(sample),
                     "peak_MiB": round(peak), "import_MiB": round(base), "fit_s": secs})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
