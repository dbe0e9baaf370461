"""Progress a person can read wherever the output goes: the one place for the TTY rule.

On a terminal, long work shows a tqdm bar. Anywhere else (``make demo > log``, a batch job,
CI) a bar would be off or a wall of carriage returns, so a plain line goes to stderr at a
modest rate instead (every :data:`EVERY_S` seconds). :func:`note` and the trainer's step lines
also go to the ``speechssl`` logger, i.e. to the current run's ``log.txt`` (see
:func:`speechssl.runs.start_run`), whatever stderr is. Importing it is cheap (tqdm is imported
when a bar is shown), so a command's config module may use it.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = [
    "EVERY_S",
    "Progress",
    "console",
    "console_logger",
    "interactive",
    "note",
    "short_duration",
]

EVERY_S = 30.0  # seconds between two progress lines on a stderr that is not a terminal
_clock = time.monotonic  # a name of this module's own, for tests

log = logging.getLogger("speechssl")


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest and redirections swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a closed stderr must not stop the work
            self.handleError(record)


# stderr only; it does not propagate, so a line sent here alone is not also in log.txt
_console = logging.getLogger("speechssl.console")
_console.propagate = False
_console.setLevel(logging.INFO)
if not _console.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    _console.addHandler(_handler)


def interactive() -> bool:
    """True when stderr is a terminal: bars there, plain lines everywhere else."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def console_logger(name: str) -> logging.Logger:
    """A logger whose lines go to stderr, plus to whatever handlers the caller adds (e.g. a
    log file of its own), but not to the current run's ``log.txt``."""
    return _console.getChild(name)


def console(msg: str) -> None:
    """One line on stderr only (for lines whose every instance is already in the log)."""
    _console.info(msg)


def note(msg: str) -> None:
    """One line for the person (stderr) and for the run (``log.txt``): a stage starting."""
    log.info(msg)
    _console.info(msg)


def short_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """A tqdm bar on a terminal; elsewhere ``desc: n/total units, ETA`` every ``every_s``.

    Args:
        total: units of work (``None``: unknown, no ETA).
        desc: a short human label (what is being done, not a cache key).
        unit: the unit of ``total``.
        initial: units already done (resuming).
        enabled: False shows nothing at all (e.g. ranks other than 0).
        leave: keep the finished bar on the terminal.
        every_s: seconds between two plain lines (default :data:`EVERY_S`).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        initial: int = 0,
        enabled: bool = True,
        leave: bool = True,
        every_s: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s = every_s = EVERY_S if every_s is None else every_s
        self._initial = initial
        self._status = ""
        self._t0 = _clock()
        self._next = self._t0 + every_s
        self._plain = enabled and not interactive()
        self._bar = None
        if enabled and not self._plain:
            from tqdm import tqdm  # here: importing this module stays light (configs use it)

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)

    @property
    def plain(self) -> bool:
        """True when progress goes out as plain lines (stderr is not a terminal)."""
        return self._plain

    def eta(self) -> float | None:
        """Seconds left at the rate so far (``None`` before any progress or without a total)."""
        done = self.n - self._initial
        if self.total is None or done <= 0:
            return None
        return (self.total - self.n) * (_clock() - self._t0) / done

    def update(self, n: int = 1, emit: bool = True) -> None:
        """Advance by ``n``; off a terminal, print a line if one is due (unless not ``emit``)."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif emit and self._plain and self.due():
            console(self.line(""))  # the count and ETA: a status belongs to the count it was set at

    def due(self, force: bool = False) -> bool:
        """Whether a plain line is due now (and, if so, restart the clock)."""
        now = _clock()
        if not (force or now >= self._next):
            return False
        self._next = now + self.every_s
        return True

    def line(self, status: str | None = None) -> str:
        """``desc: n/total units[, status], ETA 1m15s`` (default status: the last one set)."""
        status = self._status if status is None else status
        of = f"/{self.total}" if self.total is not None else ""
        text = f"{self.desc}: {self.n}{of} {self.unit}s"
        if status:
            text += f", {status}"
        eta = self.eta()
        if eta is not None and self.n < (self.total or 0):
            text += f", ETA {short_duration(eta)}"
        return text

    def set_status(self, status: str) -> None:
        """Show ``status`` beside the bar; :meth:`line` uses it by default."""
        self._status = status
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
