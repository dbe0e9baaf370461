"""The rows of ``indicators.jsonl`` (one per checkpoint x layer), as ``assess`` writes them and
``correlate`` and the reports read them."""

from __future__ import annotations

import json
from pathlib import Path

from speechssl.errors import UserError
from speechssl.indicators.layer import NAMES, RENAMED

__all__ = ["indicator_names", "read_indicator_rows"]


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
