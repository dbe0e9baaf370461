"""``speechssl export``: a pretraining run's encoder as a transformers folder.

    speechssl export --run runs/hubert-tiny --out exported/hubert-tiny --format hf

``--run`` is a run folder (its latest checkpoint) or a checkpoint folder of a frame-level
Transformer with the waveform front-end (``model.frontend: waveform``). ``--format hf`` writes
a transformers ``HubertModel`` folder (``config.json``, ``model.safetensors``,
``preprocessor_config.json``) that ``HubertModel.from_pretrained(out)`` loads with no missing
or unexpected key and whose hidden states equal ours; which HubertConfig options make it
exactly ours, and what cannot be exported (the log-mel front-end), is in
:mod:`speechssl.models.hf_export`. Only the student encoder is written, not the pretraining
heads or the teacher. The job's run folder (config, run.json, log.txt) is beside the output,
named after it (``exported/hubert-tiny.run/``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speechssl.config import opt
from speechssl.errors import UserError
from speechssl.runs import run_dir_for, start_run

__all__ = ["ExportConfig", "run_export"]

log = logging.getLogger("speechssl")


@dataclass
class ExportConfig:
    """Export a pretraining run's encoder (waveform front-end) as a transformers folder."""

    run: str = opt(help="run folder (its latest checkpoint) or checkpoint folder to export")
    out: Path = opt(help="output folder (new, empty, or a previous export)")
    format: Literal["hf"] = opt("hf", "hf: a transformers HubertModel folder")


def run_export(cfg: ExportConfig) -> Path:
    """Write the encoder of ``cfg.run`` into ``cfg.out``; returns ``cfg.out``."""
    from speechssl.models.hf_export import HF_CLASS, export_hf, hubert_config
    from speechssl.models.registry import load_upstream
    from speechssl.models.transformer import FrameTransformer

    out = Path(cfg.out)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())
    ):
        raise UserError(f"{out} exists and is not an empty folder or a previous export")
    encoder = load_upstream(cfg.run)
    if type(encoder) is not FrameTransformer:
        raise UserError(
            f"{cfg.run} is a {type(encoder).__name__}; export takes a run or checkpoint of "
            "our frame-level Transformer (speechssl pretrain)"
        )
    hubert_config(encoder.config)  # refuses what cannot be exported before writing anything
    start_run(run_dir_for(out), "export", cfg)
    export_hf(encoder, out)
    log.info("exported %s as transformers %s to %s", cfg.run, HF_CLASS, out)
    return out
