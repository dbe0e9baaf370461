"""``speechssl embed``: write the utterance embeddings of a CutSet (encoders with ``embed()``).

    speechssl embed --upstream runs/dino --cuts test.jsonl.gz --out runs/emb/test.npz

The ``.npz`` holds ``embeddings`` ``[N, D]`` float32 and ``cut_ids``; ``speechssl verify``
scores trials on it. The run folder (config, run.json, log.txt) is beside it, named after it
(``runs/emb/test.run/``), as for ``speechssl data prepare``.

On many processes or nodes (the run folder on storage all nodes see), each rank embeds its
share of the batches into ``<run>/parts/`` (rerun to resume a killed rank) and rank 0 writes
the ``.npz``, identical to a one-process run's::

    torchrun --nproc-per-node 8 -m speechssl.cli embed --upstream runs/dino ...
    torchrun --nnodes 2 --node-rank $NODE --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint $HEAD:29500 -m speechssl.cli embed --upstream runs/dino ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt
from speechssl.errors import UserError
from speechssl.runs import run_dir_for, start_run

__all__ = ["EmbedConfig", "run_embed"]


@dataclass
class EmbedConfig:
    """Write utterance embeddings of a CutSet (embed() of ECAPA / ResNet encoders).

    On many processes or nodes (identical output, resumable): `torchrun --nnodes N
    --node-rank R --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HEAD:29500 -m
    speechssl.cli embed ...` (the output's folder on storage every node sees).
    """

    upstream: str = opt(help="checkpoint or run folder of an encoder with embed()")
    cuts: Path = opt(help="CutSet manifest")
    out: Path = opt(help="output .npz (embeddings [N, D] float32, cut ids)")
    batch_size: int = opt(16, "utterances per batch", ge=1)
    device: str = opt("cpu", "device")


def run_embed(cfg: EmbedConfig) -> Path:
    """Embed every cut of ``cfg.cuts``; returns the ``.npz`` written."""
    import numpy as np

    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.verification import embed_cuts, save_embeddings
    from speechssl.models.registry import load_upstream, upstream_id
    from speechssl.training.distributed import init_distributed
    from speechssl.training.sharded import rank_device, run_sharded, wait_merged

    run = start_run(run_dir_for(cfg.out), "embed", cfg)
    dinfo = init_distributed()
    device = rank_device(cfg.device, dinfo)
    model = load_upstream(cfg.upstream, device=device)
    if not hasattr(model, "embed"):
        raise UserError(f"{cfg.upstream} has no utterance embedding (embed()); use `probe`")
    cuts = list(load_cuts(cfg.cuts))
    if not dinfo.enabled:
        emb = embed_cuts(model, cuts, batch_size=cfg.batch_size, device=device)
        return save_embeddings(cfg.out, emb, [c.id for c in cuts])

    def compute(batch):  # one batch of embed_cuts (shortest first, count-bounded)
        emb = embed_cuts(model, batch, batch_size=cfg.batch_size, device=device)
        return ((i, [emb[i : i + 1]]) for i in range(len(batch)))

    parts = run / "parts"
    shards = run_sharded(
        cuts, compute, parts, f"embed|{upstream_id(cfg.upstream)}", dinfo, desc="embeddings",
        batch_size=cfg.batch_size, longest_first=False,
    )  # fmt: skip
    out = cfg.out if cfg.out.suffix == ".npz" else cfg.out.with_suffix(".npz")
    if shards is None:
        wait_merged(parts)
        return out
    where = {c.id: i for i, c in enumerate(cuts)}
    rows: list = [None] * len(cuts)
    for cut_id, (e,) in shards:
        rows[where[cut_id]] = e[0]
    out = save_embeddings(cfg.out, np.stack(rows), [c.id for c in cuts])
    shards.remove()
    return out
