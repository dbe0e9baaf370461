"""Augmented 3 s crops per second: is waveform augmentation a bottleneck of DINO training?

Input crops are random 3 s windows of real speech (librispeech-10spk from the shared data,
decoded once); the babble pool is the same corpus (read from disk per crop, as in training).
There is no MUSAN here, so the noise folder and the RIR folder are made up: 8 files of
10 s coloured noise and 8 synthetic RIRs (RT60 0.3-0.9 s) written as WAVs into a temporary
folder and read through their CutSet manifests (cached in memory after the first read).

Timed, on one thread:

* each step alone with probability 1 (the cost when it happens);
* the DINO paper's setting (noise p 0.7 of coloured/babble/recorded, reverb p 0.45);
* everything on (paper setting + speed p 0.5 + gain p 0.5, recorded RIRs);

and the paper setting through a ``DataLoader`` with 2 workers (one thread each): the
throughput a 2-core training job gets. DINO makes 6 crops per utterance (2 x 3 s + 4 x 2 s).

    python benchmarks/bench_augment.py --out benchmarks/results/augment.md
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import DATA_ROOT, RESULTS, header, load_average, write_result
from lhotse import CutSet

from speechssl.audio.augment import Augmenter
from speechssl.audio.augment_config import AugmentConfig
from speechssl.audio.io import SAMPLE_RATE, load_cut, recording
from speechssl.audio.noise import coloured_noise
from speechssl.audio.reverb import synthetic_rir

CROP = 3 * SAMPLE_RATE
OFF = dict(noise_prob=0.0, reverb_prob=0.0, speed_prob=0.0, gain_prob=0.0)


def speech_cuts(root: Path, files: int) -> list:
    table = root / "librispeech-10spk" / "labels.csv"
    if not table.is_file():
        sys.exit(f"error: {table} is missing; is --data-root the shared data folder?")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))[:files]
    return [recording(root / "librispeech-10spk" / r["path"]).to_cut() for r in rows]


def fake_folders(tmp: Path) -> tuple[Path, Path]:
    """Manifests of 8 coloured-noise files and 8 synthetic RIRs, as a user's folders would be."""
    g = torch.Generator().manual_seed(0)
    manifests = []
    for kind in ("noise", "rir"):
        cuts = []
        for i in range(8):
            if kind == "noise":
                audio = 0.1 * coloured_noise(10 * SAMPLE_RATE, beta=i / 4, generator=g)
            else:
                audio = 0.5 * synthetic_rir(0.3 + 0.6 * i / 7, drr_db=3.0, generator=g)
            path = tmp / kind / f"{kind}{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio.numpy(), SAMPLE_RATE)
            cuts.append(recording(path).to_cut())
        manifests.append(tmp / f"{kind}.jsonl.gz")
        CutSet.from_cuts(cuts).to_file(manifests[-1])
    return manifests[0], manifests[1]


class Crops(torch.utils.data.Dataset):
    """Crop ``i``: a random 3 s window of a random utterance, augmented with seed ``i``."""

    def __init__(self, waves: list[np.ndarray], aug: Augmenter, size: int):
        self.waves, self.aug, self.size = waves, aug, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(i)
        w = self.waves[int(torch.randint(len(self.waves), (1,), generator=g))]
        start = int(torch.randint(len(w) - CROP + 1, (1,), generator=g))
        return self.aug(torch.from_numpy(w[start : start + CROP]), g)


def one_thread_rate(ds: Crops) -> tuple[float, float]:
    """(median ms per crop, crops per second) over the whole dataset, after 5 warm-up crops."""
    for i in range(5):
        ds[i]
    times = []
    for i in range(len(ds)):
        t0 = time.perf_counter()
        ds[i]
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), len(times) / sum(times)


def loader_rate(ds: Crops, workers: int) -> float:
    def init(_: int) -> None:
        torch.set_num_threads(1)

    loader = torch.utils.data.DataLoader(
        ds, batch_size=16, num_workers=workers, worker_init_fn=init, persistent_workers=False
    )
    t0 = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--files", type=int, default=60, help="speech files (crops and babble)")
    ap.add_argument("--crops", type=int, default=120, help="crops per one-thread measurement")
    ap.add_argument("--loader-crops", type=int, default=480)
    ap.add_argument("--out", type=Path, default=RESULTS / "augment.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = load_average()

    cuts = speech_cuts(args.data_root, args.files)
    waves = [w for w in (load_cut(c) for c in cuts) if len(w) >= CROP]
    with tempfile.TemporaryDirectory() as tmp:
        noise, rirs = fake_folders(Path(tmp))
        paper = dict(noise_manifest=noise)
        settings = {
            "speed alone (0.9 / 1.1)": dict(OFF, speed_prob=1.0, speeds=(0.9, 1.1)),
            "reverb alone, synthetic RIR (RT60 0.2-1.0 s)": dict(OFF, reverb_prob=1.0),
            "reverb alone, recorded RIRs (manifest)": dict(OFF, reverb_prob=1.0, rir_manifest=rirs),
            "coloured noise alone": dict(OFF, noise_prob=1.0, noise_kinds=["coloured"]),
            "babble alone (3-7 utterances read from disk)": dict(
                OFF, noise_prob=1.0, noise_kinds=["babble"]
            ),
            "recorded noise alone (cached)": dict(
                OFF, noise_prob=1.0, noise_kinds=["recorded"], noise_manifest=noise
            ),
            "gain alone": dict(OFF, gain_prob=1.0),
            "paper setting (noise 0.7, reverb 0.45)": paper,
            "everything (paper + speed 0.5 + gain 0.5, recorded RIRs)": dict(
                paper, speed_prob=0.5, gain_prob=0.5, rir_manifest=rirs
            ),
            "nothing (crop only)": dict(OFF),
        }
        rows = []
        for name, kw in settings.items():
            aug = Augmenter(AugmentConfig(**kw), babble_pool=cuts)
            ms, rate = one_thread_rate(Crops(waves, aug, args.crops))
            rows.append(f"| {name} | {ms:.2f} | {rate:,.0f} | {rate * CROP / SAMPLE_RATE:,.0f} |")
        aug = Augmenter(AugmentConfig(**paper), babble_pool=cuts)
        loader = loader_rate(Crops(waves, aug, args.loader_crops), workers=2)
    load_after = load_average()

    lines = header("Waveform augmentation throughput (3 s crops)", threads=1)
    lines += [
        f"- Speech: {len(waves)} files of librispeech-10spk >= 3 s (crops) and {len(cuts)} "
        "(babble pool, read from disk per crop); noise and RIR folders: 8 synthetic files each",
        f"- One-thread rows: {args.crops} crops each after 5 warm-up crops; DataLoader: "
        f"{args.loader_crops} crops, batch 16, 2 workers with one thread each",
        f"- Load average before / after: {load_before} / {load_after} (shared machine: a load "
        "above 0 means other processes competed for the cores)",
        "",
        "| setting | ms per crop (median, 1 thread) | crops/s (1 thread) | audio s / wall s |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"DataLoader, paper setting, 2 workers: **{loader:,.0f} crops/s**, i.e. about "
        f"{loader / 6:,.0f} utterances/s at DINO's 6 crops per utterance (counting every crop "
        "as 3 s; the 4 local crops are 2 s and cheaper), or "
        f"{loader * CROP / SAMPLE_RATE:,.0f} s of augmented audio per second. Compare with the "
        "audio seconds per second an encoder trains on in `encoders.md`.",
    ]
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
