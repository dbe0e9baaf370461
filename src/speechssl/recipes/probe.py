"""``speechssl probe``: SUPERB-style probes of a frozen upstream on one task.

Extract (or reuse) every layer's features once, then train a small probe per seed on them
(utterance or frame tasks) or score cosine trials (verification) with
:func:`~speechssl.evaluation.probe_task.run_probe_on`, and write ``results.json`` and
``results.md`` into the run folder.

    speechssl probe --upstream fbank --task fsdd-digit --out runs/probe-fbank-digit
    speechssl probe --upstream tiny --task so762-phones --ctc-head context --out runs/pr-tiny
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speechssl.config import opt, to_dict
from speechssl.errors import UserError
from speechssl.evaluation.task_presets import PRESETS
from speechssl.runs import probe_cache_dir, start_run

# The config imports nothing heavy (a command's --help reads it); the wiring below imports
# torch, lhotse and the library where it runs.

__all__ = ["ProbeConfig", "run_probe"]


@dataclass
class ProbeConfig:
    """Probe a frozen upstream on a task (a preset, or your own CutSet and label).

    Feature extraction on many processes or nodes: `torchrun --nnodes N --node-rank R
    --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HEAD:29500 -m speechssl.cli probe
    ...` (the cache folder on storage every node sees); rank 0 trains the probes.
    """

    upstream: str = opt(help="fbank | mfcc | tiny | small | base | checkpoint folder | HF folder")
    out: Path = opt(help="run folder for results.json, results.md, config and log")
    task: str | None = opt(None, f"preset task: {', '.join(PRESETS)}")
    cuts: Path | None = opt(None, "CutSet for a custom task (or the synthetic corpus of synth-*)")
    label: str | None = opt(None, "label field to predict (custom task)")
    kind: Literal["utterance", "verification", "frame", "ctc"] | None = opt(
        None,
        "probe kind of a custom task (default utterance; a preset has its own); ctc: a "
        "space-separated token label, PER",
    )
    split_by: Literal["speaker", "variant", "utterance", "split", "all"] | None = opt(
        None,
        "split rule (custom task): whole speakers, whole voice variants (synthetic corpus), "
        "utterances within speakers, a 'split' label, all=test",
    )
    split_seed: int = opt(0, "seed of the train/dev/test split and of verification trials", ge=0)
    layer: int | None = opt(
        None, "probe one layer (index into hidden states); none = learnable weighted sum"
    )
    select_layer: bool = opt(
        False,
        "probe each layer alone (first seed), keep the one best on dev, report all seeds on it",
    )
    classifier: Literal["linear", "mlp"] = opt("linear", "utterance classifier on pooled mean+std")
    seeds: list[int] = opt(
        factory=lambda: [0, 1, 2], help="probe training seeds (mean and std reported)", ge=0
    )
    ctc_head: Literal["linear", "context", "bilstm"] = opt(
        "linear",
        "ctc head: linear (SUPERB PR), context (+-4 frames, one hidden layer), bilstm (2 layers)",
    )
    skip_short: bool = opt(
        False, "ctc: train without cuts shorter than their label (counted) instead of an error"
    )
    epochs: int | None = opt(
        None, "training epochs, early stopping on dev (default 30; ctc 40)", ge=1
    )
    lr: float | None = opt(None, "Adam learning rate (default 1e-3; ctc 2e-3)", gt=0)
    batch_size: int | None = opt(
        None,
        "batch size: utterances (default 64; ctc 4), or frames x 16 for frame tasks",
        ge=1,
    )
    cache_dir: Path = opt(
        factory=lambda: probe_cache_dir(),
        help="feature and prepared-CutSet cache",
    )
    data_root: Path | None = opt(
        None, "shared data folder (default $SPEECHSSL_DATA or ../shared/data)"
    )
    device: str = opt("cpu", "device for feature extraction")


def run_probe(cfg: ProbeConfig) -> dict:
    """Run the probe of ``cfg``; returns what it writes to ``results.json``."""
    from speechssl.data.batching import get_label
    from speechssl.evaluation.ctc_probe import CtcTraining
    from speechssl.evaluation.features import extract_features
    from speechssl.evaluation.probe_task import run_probe_on
    from speechssl.evaluation.probes import ProbeTraining
    from speechssl.evaluation.tasks import build_task
    from speechssl.evaluation.verification import embed_cuts, score_speakers
    from speechssl.indicators.rows import checkpoint_key
    from speechssl.models.registry import load_upstream, upstream_id
    from speechssl.report.probe import render_probe
    from speechssl.training.distributed import all_gather_objects, init_distributed
    from speechssl.training.sharded import wait_complete

    if not cfg.seeds:
        raise UserError("give at least one seed")
    if cfg.select_layer and cfg.layer is not None:
        raise UserError("give --layer N or --select-layer, not both")
    started = time.time()
    run_dir = start_run(cfg.out, "probe", cfg, seed=cfg.seeds[0])
    dinfo = init_distributed()
    if dinfo.enabled and not dinfo.is_main:  # torchrun: rank 0 may write the cached CutSet
        all_gather_objects(None, dinfo)
    task = build_task(
        cfg.task,
        cuts=cfg.cuts,
        label=cfg.label,
        kind=cfg.kind,
        split_by=cfg.split_by,
        data_root=cfg.data_root,
        cache_dir=cfg.cache_dir,
        seed=cfg.split_seed,
    )
    if dinfo.enabled and dinfo.is_main:
        all_gather_objects(None, dinfo)
    feats = extract_features(
        lambda: load_upstream(cfg.upstream, device=cfg.device),
        task.all_cuts(),
        cfg.cache_dir / "features",
        upstream_id(cfg.upstream),
        device=cfg.device,
    )
    if not dinfo.is_main:  # torchrun: the ranks shared the extraction; rank 0 probes
        wait_complete(run_dir / "results.json", newer_than=started)
        return json.loads((run_dir / "results.json").read_text())
    given = {
        k: v for k, v in (("epochs", cfg.epochs), ("lr", cfg.lr), ("batch_size", cfg.batch_size))
        if v is not None
    }  # fmt: skip
    results = run_probe_on(
        task, feats, layer=cfg.layer, classifier=cfg.classifier, seeds=cfg.seeds,
        training=ProbeTraining(**given), split_seed=cfg.split_seed,
        ctc=CtcTraining(**given), ctc_head=cfg.ctc_head, skip_short=cfg.skip_short,
        select_layer=cfg.select_layer,
    )  # fmt: skip
    if task.kind == "verification":
        model = load_upstream(cfg.upstream, device=cfg.device)
        if hasattr(model, "embed"):  # a speaker encoder: score its own embedding too
            cuts = list(task.splits["test"])
            speakers = [str(get_label(c, task.label)) for c in cuts]
            emb = embed_cuts(model, cuts, device=cfg.device)
            results["embed_metrics"] = score_speakers(emb, speakers, seed=cfg.split_seed)
    results["upstream"] = cfg.upstream
    results["checkpoint"] = checkpoint_key(cfg.upstream)  # what correlate joins on
    results["config"] = to_dict(cfg)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (run_dir / "results.md").write_text(render_probe(results) + "\n")
    return results
