"""Run under torchrun by tests/test_sharded.py: the per-cut jobs on every rank, one process group.

torchrun --nproc-per-node 2 tests/sharded_jobs.py CUTS ENCODER LABELLED VOICED OUT

VOICED: LABELLED less its cut too short for a frame (the probe refuses those).
"""

from __future__ import annotations

import sys
from pathlib import Path

from speechssl.data.manifest import load_cuts
from speechssl.evaluation.features import extract_features
from speechssl.models.registry import load_upstream
from speechssl.recipes.assess import AssessConfig, run_assess
from speechssl.recipes.embed import EmbedConfig, run_embed
from speechssl.recipes.kmeans_jobs import KmeansFitConfig, KmeansLabelConfig, fit, label
from speechssl.recipes.probe import ProbeConfig, run_probe
from speechssl.recipes.select import SelectConfig, run_select


def main(cuts: Path, encoder: Path, labelled: Path, voiced: Path, out: Path) -> None:
    fit(KmeansFitConfig(cuts=cuts, out=out / "km", k=4, max_frames=300, n_iter=5, batch_size=2))
    label(KmeansLabelConfig(kmeans=out / "km", cuts=cuts, out=out / "lab", batch_size=2))
    run_embed(EmbedConfig(upstream=str(encoder), cuts=cuts, out=out / "emb.npz", batch_size=3))
    extract_features(lambda: load_upstream("tiny"), list(load_cuts(cuts)), out / "cache", "tiny",
                     batch_size=2, progress=False)  # fmt: skip
    acfg = AssessConfig(upstream=["fbank", "mfcc"], cuts=[cuts], out=out / "assess",
                        cache_dir=out / "acache")  # fmt: skip
    acfg.indicators.k, acfg.indicators.indicators = 4, ["rankme", "inertia_per_frame"]
    run_assess(acfg)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_selection import StandIn

    import speechssl.selection.items as items

    items.pseudolabel_backend = lambda: items.PseudoLabelBackend(
        StandIn.names, StandIn.extract, StandIn.voiced_only
    )
    # 2 s of padded audio per batch: several batches to deal, of different sizes
    run_select(SelectConfig(cuts=labelled, label="speaker", out=out / "select", permutations=20,
                            frames=10, batch_seconds=2.0))  # fmt: skip
    # the probe: every rank extracts features into the cache, rank 0 trains and writes
    run_probe(ProbeConfig(upstream="tiny", cuts=voiced, label="speaker", split_by="utterance",
                          seeds=[0], epochs=3, out=out / "probe", cache_dir=out / "pcache"))  # fmt: skip


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:6]))
