"""Log-mel throughput on real speech: batched vs one file at a time, and end to end.

Takes the first files (labels.csv order) of fsdd, ravdess and librispeech-10spk until each
contributes an equal share of ``--seconds`` of audio, then times:

* batched, features only: audio already decoded, sorted by length, padded into batches of
  ``--batch-size``; only ``LogMel.forward`` is timed;
* per-file, features only: the same ``LogMel`` on one ``[1, T]`` waveform at a time;
* end to end: decode + resample to 16 kHz (``speechssl.audio.io.load_file``) + padding +
  batched ``LogMel``.

Each measurement runs once to warm up and then ``--repeats`` times; the median is reported.

    python benchmarks/bench_logmel.py --out benchmarks/results/logmel.md
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from common import DATA_ROOT, RESULTS, header, load_average, timed, write_result

from speechssl.audio.features import LogMel
from speechssl.audio.io import SAMPLE_RATE, load_file

DATASETS = ("fsdd", "ravdess", "librispeech-10spk")


def pick_files(root: Path, seconds: float) -> list[Path]:
    """The first files of each dataset until each holds ``seconds / len(DATASETS)`` seconds."""
    share = seconds / len(DATASETS)
    files: list[Path] = []
    for name in DATASETS:
        table = root / name / "labels.csv"
        if not table.is_file():
            sys.exit(f"error: {table} is missing; is --data-root the shared data folder?")
        total = 0.0
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                if total >= share:
                    break
                files.append(root / name / row["path"])
                total += float(row["duration_s"])
    return files


def pad_batches(
    waves: list[np.ndarray], batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Length-sorted, zero-padded ``(audio [B, T], lengths [B])`` batches."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]), reverse=True)
    batches = []
    for s in range(0, len(order), batch_size):
        chunk = [waves[i] for i in order[s : s + batch_size]]
        lengths = torch.tensor([len(w) for w in chunk], dtype=torch.int64)
        audio = torch.zeros(len(chunk), int(lengths.max()))
        for row, w in zip(audio, chunk, strict=True):
            row[: len(w)] = torch.from_numpy(w)
        batches.append((audio, lengths))
    return batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=DATA_ROOT)
    ap.add_argument("--out", type=Path, default=RESULTS / "logmel.md")
    ap.add_argument("--seconds", type=float, default=600.0, help="audio to process")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    if not args.data_root.is_dir():
        sys.exit(f"error: data folder {args.data_root} does not exist (pass --data-root)")
    torch.set_num_threads(args.threads)
    files = pick_files(args.data_root, args.seconds)
    waves = [load_file(p) for p in files]
    audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
    frontend = LogMel()
    batches = pad_batches(waves, args.batch_size)
    singles = [torch.from_numpy(w)[None] for w in waves]

    @torch.inference_mode()
    def batched() -> None:
        for audio, lengths in batches:
            frontend(audio, lengths)

    @torch.inference_mode()
    def per_file() -> None:
        for w in singles:
            frontend(w)

    @torch.inference_mode()
    def end_to_end() -> None:
        for audio, lengths in pad_batches([load_file(p) for p in files], args.batch_size):
            frontend(audio, lengths)

    load_before = load_average()
    rows = [
        ("batched, features only", timed(batched, args.repeats)),
        ("per-file loop, features only", timed(per_file, args.repeats)),
        ("end to end: decode + resample + batched features", timed(end_to_end, args.repeats)),
    ]

    load_after = load_average()
    per_ds = {n: sum(p.relative_to(args.data_root).parts[0] == n for p in files) for n in DATASETS}
    lines = [
        *header("Log-mel front-end throughput", args.threads),
        f"- Audio: {len(files)} files, {audio_s:.1f} s at 16 kHz from {args.data_root} "
        f"({', '.join(f'{n}: {c} files' for n, c in per_ds.items())}; fsdd is 8 kHz, "
        "resampled on load)",
        f"- LogMel: 80 mels, 400/160 window/hop, n_fft 512; batches of {args.batch_size} "
        f"sorted by length; {args.repeats} timed runs after one warm-up (median and best)",
        f"- Load average before / after: {load_before} / {load_after} (the machine is shared; "
        "a load above 0 means other processes competed for the cores)",
        "",
        "| path | audio s | wall s (median) | x real time (median) | wall s (best) "
        "| x real time (best) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, times in rows:
        med, best = statistics.median(times), min(times)
        lines.append(
            f"| {name} | {audio_s:.1f} | {med:.3f} | {audio_s / med:,.0f} | {best:.3f} "
            f"| {audio_s / best:,.0f} |"
        )
    write_result(args.out, lines)


if __name__ == "__main__":
    main()
