"""The rows of ``indicators.jsonl`` (one per checkpoint x layer), as ``assess`` writes them and
``correlate`` and the reports read them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from speechssl.errors import UserError
from speechssl.indicators.indicator_config import NAMES, RENAMED

__all__ = ["checkpoint_key", "indicator_names", "read_indicator_rows", "row_key"]


def checkpoint_key(spec: str) -> str:
    """One spelling per upstream, so that ``assess`` rows and probe results join.

    An existing path becomes the resolved checkpoint folder it loads (a run folder: its latest
    step, as :func:`~speechssl.models.registry.resolve_checkpoint` picks it), so
    ``./runs/x``, ``runs/x/`` and ``/abs/runs/x`` are one key; a name (``fbank``) or a path
    that is gone is kept, normalised.
    """
    from speechssl.models.registry import resolve_checkpoint  # torch: only when needed

    path = Path(spec).expanduser()
    if not path.exists():
        return os.path.normpath(spec)
    try:
        return str(resolve_checkpoint(path).resolve())
    except UserError:  # not one of ours (an HF folder, ...)
        return str(path.resolve())


def row_key(row: dict) -> str:
    """The :func:`checkpoint_key` of an ``assess`` row or a probe ``results.json``: the one
    recorded when it was written (``checkpoint``), else that of its ``upstream`` from here."""
    return row.get("checkpoint") or checkpoint_key(row["upstream"])


def read_indicator_rows(path: str | Path) -> list[dict]:
    """Rows of an ``indicators.jsonl`` (or of the run folder holding it).

    Columns of rows written under an old name (:data:`~speechssl.indicators.layer.RENAMED`)
    are read under the current one.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "indicators.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: run `speechssl assess` first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        for old, new in RENAMED.items():
            if old in row and new not in row:
                row[new] = row.pop(old)
    return rows


def indicator_names(rows: list[dict]) -> list[str]:
    """Indicator columns present in ``rows`` (intervals and bookkeeping left out)."""
    present = {k for r in rows for k in r}
    return [n for n in NAMES if n in present]
