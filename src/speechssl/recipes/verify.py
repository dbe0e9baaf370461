"""``speechssl verify``: speaker verification on embeddings from ``speechssl embed``.

    speechssl verify --embeddings runs/emb/test.npz --cuts test.jsonl.gz --out runs/emb/eer.json

Trials come from a list (``--trials``, lines ``cut_id_a cut_id_b 0|1``) or are built
balanced from the speaker label of ``--cuts``; scores are cosines of centred embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from speechssl.config import opt
from speechssl.errors import UserError

__all__ = ["VerifyConfig", "run_verify"]


@dataclass
class VerifyConfig:
    """Speaker verification: cosine-score trials of embeddings -> EER and minDCF."""

    embeddings: Path = opt(help="a .npz from `speechssl embed`")
    cuts: Path | None = opt(None, "CutSet with the speaker label (to build balanced trials)")
    trials: Path | None = opt(None, "trial list: lines 'cut_id_a cut_id_b 0|1' (else built)")
    label: str = opt("speaker", "speaker label field (when building trials)")
    seed: int = opt(0, "seed of the built trials", ge=0)
    out: Path | None = opt(None, "write the metrics as JSON here")


def run_verify(cfg: VerifyConfig) -> dict:
    """EER and minDCF of the trials of ``cfg``; also written to ``cfg.out`` when given."""
    from speechssl.data.batching import get_label
    from speechssl.data.manifest import load_cuts
    from speechssl.evaluation.verification import (
        cosine_scores,
        load_embeddings,
        make_trials,
        read_trials,
        verification_metrics,
    )

    emb, ids = load_embeddings(cfg.embeddings)
    if cfg.trials is not None:
        trials = read_trials(cfg.trials, {c: i for i, c in enumerate(ids)})
    elif cfg.cuts is not None:
        by_id = {c.id: c for c in load_cuts(cfg.cuts)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(
                f"{len(missing)} embedded cut(s) are not in {cfg.cuts}, e.g. {missing[0]}"
            )
        speakers = [str(get_label(by_id[i], cfg.label)) for i in ids]
        trials = make_trials(speakers, seed=cfg.seed)
    else:
        raise UserError("give --trials or --cuts (to build trials from the speaker label)")
    if len(trials) == 0 or trials[:, 2].min() == trials[:, 2].max():
        raise UserError("the trials need both target and non-target pairs")
    result = verification_metrics(cosine_scores(emb, trials), trials[:, 2])
    result["trials"] = len(trials)
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    return result
