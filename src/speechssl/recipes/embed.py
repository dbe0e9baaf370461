"""``speechssl embed``: write the utterance embeddings of a CutSet (encoders with ``embed()``).

    speechssl embed --upstream runs/dino --cuts test.jsonl.gz --out runs/emb/test.npz

The ``.npz`` holds ``embeddings`` ``[N, D]`` float32 and ``cut_ids``; ``speechssl verify``
scores trials on it. The run folder (config, run.json, log.txt) is beside it, named after it
(``runs/emb/test.run/``), as for ``speechssl data prepare``.
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
    """Write utterance embeddings of a CutSet (embed() of ECAPA / ResNet encoders)."""

    upstream: str = opt(help="checkpoint or run folder of an encoder with embed()")
    cuts: Path = opt(help="CutSet manifest")
    out: Path = opt(help="output .npz (embeddings [N, D] float32, cut ids)")
    batch_size: int = opt(16, "utterances per batch", ge=1)
    device: str = opt("cpu", "device")


def run_embed(cfg: EmbedConfig) -> Path:
    """Embed every cut of ``cfg.cuts``; returns the ``.npz`` written."""
    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.verification import embed_cuts, save_embeddings
    from speechssl.models.registry import load_upstream

    start_run(run_dir_for(cfg.out), "embed", cfg)
    model = load_upstream(cfg.upstream, device=cfg.device)
    if not hasattr(model, "embed"):
        raise UserError(f"{cfg.upstream} has no utterance embedding (embed()); use `probe`")
    cuts = list(load_cuts(cfg.cuts))
    emb = embed_cuts(model, cuts, batch_size=cfg.batch_size, device=cfg.device)
    return save_embeddings(cfg.out, emb, [c.id for c in cuts])
