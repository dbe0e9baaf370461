"""Where training metrics go: ``metrics.jsonl`` always, TensorBoard if installed, and a line
a person reads: every logged step in ``log.txt``; a tqdm bar on a terminal, else the same line
on stderr every :data:`speechssl.progress.EVERY_S` seconds (and at the last step).

Only rank 0 makes a :class:`MetricsLog` that writes; the others get a silent one, so the
loop does not branch on the rank at every call.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from speechssl.progress import Progress, console

__all__ = ["MetricsLog", "read_metrics"]

log = logging.getLogger("speechssl")


class MetricsLog:
    """One JSON object per logged step in ``<run_dir>/metrics.jsonl``; optional TensorBoard.

    Args:
        run_dir: the run folder.
        total_steps: for the bar's length and ETA.
        start_step: where this process starts (non-zero when resuming); logged steps after it,
            left by a run that was killed, are dropped from the JSONL so that every step is
            logged once.
        enabled: False on ranks other than 0.
        progress: show progress on stderr (a bar on a terminal, a line every so often
            elsewhere); ``log.txt`` gets every logged step either way.
    """

    def __init__(
        self,
        run_dir: str | Path,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = None
        self._tb = None
        self._bar: Progress | None = None
        self._reported = False
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if start_step > 0 and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= start_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif start_step == 0 and self.path.is_file():
            self.path.unlink()
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=start_step)
        except ImportError:
            log.info("tensorboard is not installed; metrics go to metrics.jsonl only")
        self._bar = Progress(total_steps, "train", "step", initial=start_step, enabled=progress)

    def step(self) -> None:
        """Advance the bar by one optimizer step."""
        if self._bar is not None:
            last = self._bar.total is not None and self._bar.n + 1 >= self._bar.total
            self._bar.update(1, emit=not last)  # the last step's line comes with its metrics

    def write(self, record: dict[str, Any]) -> None:
        """Log one step's metrics (``record["step"]`` required)."""
        if not self.enabled:
            return
        clean = {k: _plain(v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, clean["step"])
        if "lr" in clean:  # a training step (monitor records have no learning rate)
            self._report(clean)

    def _report(self, rec: dict[str, Any]) -> None:
        """The step's line: always to log.txt; to stderr as the bar's status or, off a
        terminal, every so often and at the last step."""
        bar = self._bar
        bar.set_status(_status(rec))
        line = bar.line()
        log.info("%s", line)
        first, last = not self._reported, bar.total is not None and rec["step"] >= bar.total
        self._reported = True
        if bar.plain and bar.due(force=first or last):
            console(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def _status(rec: dict[str, Any]) -> str:
    """``loss 4.213, lr 1.00e-04, 312 audio h/h`` from a step's record."""
    loss = float(rec.get("loss", "nan"))  # _plain wrote a non-finite loss as "nan" / "inf"
    parts = [f"loss {loss:.4g}", f"lr {rec['lr']:.2e}"]
    if "audio_h_per_h" in rec:
        rate = rec["audio_h_per_h"]
        parts.append(f"{rate:.0f} audio h/h" if rate >= 10 else f"{rate:.2g} audio h/h")
    return ", ".join(parts)


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, from a kill, is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
