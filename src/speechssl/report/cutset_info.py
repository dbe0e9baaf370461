"""The picture of ``speechssl data info --plot``: durations and label counts of a CutSet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechssl.data.info import MAX_VALUES_LISTED, CutSetInfo
from speechssl.report.plots import pyplot

__all__ = ["plot_info"]


def plot_info(info: CutSetInfo, path: str | Path, title: str = "") -> Path:
    """A PNG with the duration histogram and the counts of the first few label fields."""
    plt = pyplot()
    small = [(k, c) for k, c in info.labels.items() if len(c) <= MAX_VALUES_LISTED][:3]
    fig, axes = plt.subplots(1, 1 + len(small), figsize=(4.5 * (1 + len(small)), 3.4))
    axes = np.atleast_1d(axes)
    axes[0].hist(info.durations, bins=30, color="#4477aa")
    axes[0].set_xlabel("duration (s)")
    axes[0].set_ylabel("utterances")
    axes[0].set_title(f"{info.utterances} utterances, {info.hours:.2f} h")
    for ax, (name, counts) in zip(axes[1:], small, strict=True):
        keys = sorted(counts)
        ax.bar(range(len(keys)), [counts[k] for k in keys], color="#66aa55")
        ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=7)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
