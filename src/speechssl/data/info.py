"""What is in a CutSet: hours, utterances, label counts, sample rates, durations."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from lhotse import CutSet

from speechssl.data.manifest import labels_of

MAX_VALUES_LISTED = 30


@dataclass
class CutSetInfo:
    utterances: int
    hours: float
    durations: np.ndarray
    native_rates: Counter
    labels: dict[str, Counter] = field(default_factory=dict)

    def render(self, bins: int = 10) -> str:
        d = self.durations
        lines = [
            f"utterances: {self.utterances}",
            f"hours: {self.hours:.3f}",
            f"duration (s): min {d.min():.2f}  mean {d.mean():.2f}  median {np.median(d):.2f}"
            f"  max {d.max():.2f}",
            "sample rates on disk: "
            + ", ".join(f"{sr} Hz x {n}" for sr, n in sorted(self.native_rates.items())),
        ]
        for name, counts in self.labels.items():
            if len(counts) > MAX_VALUES_LISTED:
                lines.append(f"label {name}: {len(counts)} distinct values")
                continue
            values = ", ".join(f"{v}: {n}" for v, n in sorted(counts.items()))
            lines.append(f"label {name} ({len(counts)} values): {values}")
        lines.append("duration histogram (s):")
        hist, edges = np.histogram(d, bins=bins)
        width = max(hist.max(), 1)
        for h, lo, hi in zip(hist, edges[:-1], edges[1:], strict=True):
            bar = "#" * int(round(40 * h / width))
            lines.append(f"  {lo:7.2f} - {hi:7.2f} | {bar} {h}")
        return "\n".join(lines)


def describe(cuts: CutSet) -> CutSetInfo:
    """Summary statistics of ``cuts``; label counts from the supervisions' custom fields."""
    durations = np.array([c.duration for c in cuts], dtype=float)
    rates: Counter = Counter()
    labels: dict[str, Counter] = defaultdict(Counter)
    for c in cuts:
        rates[native_rate(c)] += 1
        for k, v in labels_of(c).items():
            labels[k][v] += 1
    return CutSetInfo(len(durations), float(durations.sum() / 3600), durations, rates, dict(labels))


def native_rate(cut) -> int:
    """The sample rate of the file on disk (before the Resample transform of the manifest)."""
    rec = cut.recording
    for t in rec.transforms or []:
        t = t if isinstance(t, dict) else t.to_dict()
        if t.get("name") == "Resample":
            return int(t["kwargs"]["source_sampling_rate"])
    return int(rec.sampling_rate)
