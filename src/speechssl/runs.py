"""Run folders: everything needed to reproduce a job lives beside its results.

Each job writes ``config.yaml`` (the resolved config), ``run.json`` and ``log.txt`` into its
run folder. ``run.json`` keeps the folder's history: one entry in ``invocations`` per command
run into it (a ``--resume`` adds one, it does not overwrite), each with its job, command line,
seed, package version, host, start time and outcome (``running``, ``ok``, or ``failed`` with
the error line and exit code); its top-level fields repeat the latest invocation's.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from speechssl import __version__
from speechssl.config import save_yaml
from speechssl.errors import UserError

log = logging.getLogger("speechssl")

RUNNING, OK, FAILED = "running", "ok", "failed"

# Run folders started by this process, latest last; their invocations still open are closed
# at exit (ok, or failed when an exception ended the process).
_started: list[Path] = []
_last_before: BaseException | None = None


def start_run(run_dir: str | Path, job: str, config: Any, seed: int | None = None) -> Path:
    """Create ``run_dir`` and record the job's config, seed and version; log to its log.txt.

    The invocation is appended to the folder's ``run.json`` history, so a resumed run keeps
    the record of every command that wrote to it.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run folder {run_dir}: {exc.strerror}") from None
    save_yaml(config, run_dir / "config.yaml")
    invocation = {
        "job": job,
        "seed": seed,
        "speechssl_version": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "command": sys.argv,
        "started": _now(),
        "outcome": RUNNING,
    }
    if _writes_history():
        _write_history(run_dir, [*read_history(run_dir), invocation])
    _log_to(run_dir / "log.txt")
    if not _started:
        _note_exit_state()
    _started.append(run_dir)
    log.info("%s started (speechssl %s, seed %s)", job, __version__, seed)
    return run_dir


def read_history(run_dir: str | Path) -> list[dict]:
    """The invocations recorded in ``run_dir/run.json``, oldest first (a ``run.json`` written
    before histories were kept counts as one; none or unreadable: an empty list)."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(info, dict):
        return []
    history = info.get("invocations")
    return list(history) if isinstance(history, list) else [info]


def record_failure(message: str, code: int) -> None:
    """Record that the command failed: the error line and exit code go to ``run.json`` and
    ``log.txt`` of the current run folder (the latest started) and of the command's own (the
    first this process started: ``demo`` and ``finetune`` start folders of their stages
    inside theirs). No run folder yet: nothing.

    Never raises: a run folder that cannot be written must not hide the error itself.
    """
    for run_dir in dict.fromkeys(_started[-1:] + _started[:1]):
        _close(run_dir, FAILED, error=message, exit_code=code)


def _close(run_dir: Path, outcome: str, **extra: Any) -> None:
    """Set the outcome of ``run_dir``'s latest invocation if it is still running (a failure
    also gets a line in its log.txt)."""
    history = read_history(run_dir) if _writes_history() else []
    if not history or history[-1].get("outcome") != RUNNING:
        return
    history[-1].update(outcome=outcome, finished=_now(), **extra)
    try:
        _write_history(run_dir, history)
        if outcome == FAILED:
            with open(run_dir / "log.txt", "a") as f:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                f.write(f"{stamp} ERROR failed with exit code {extra.get('exit_code')}: ")
                f.write(f"{extra.get('error')}\n")
    except OSError:
        pass


def _writes_history() -> bool:
    """Only the first process of a torchrun job records it (every rank calls start_run)."""
    return os.environ.get("RANK", "0") == "0"


def _note_exit_state() -> None:
    global _last_before
    _last_before = getattr(sys, "last_value", None)
    atexit.register(_close_at_exit)


def _close_at_exit() -> None:
    """At exit, invocations still open ended well, unless an exception ended the process."""
    exc = getattr(sys, "last_value", None)  # set by Python for an uncaught exception
    if exc is _last_before:  # one from before the runs (an interactive session's)
        exc = None
    for run_dir in _started:
        if exc is not None and run_dir in (_started[0], _started[-1]):
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _close(run_dir, FAILED, error=line, exit_code=1)
        else:
            _close(run_dir, OK, exit_code=0)


def write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON through a temporary file and a rename, so that a killed process
    leaves the old file or the new one, never half of one (resume reads these files)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent) + ("\n" if indent is not None else ""))
    os.replace(tmp, path)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    write_json(run_dir / "run.json", {**history[-1], "invocations": history}, indent=2)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def cache_root() -> Path:
    """Where corpora and features are cached: ``$SPEECHSSL_CACHE``, else ``~/.cache/speechssl``
    (``$XDG_CACHE_HOME`` honoured). Caches outlive run folders and are safe to delete."""
    if os.environ.get("SPEECHSSL_CACHE"):
        return Path(os.environ["SPEECHSSL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "speechssl"


def probe_cache_dir() -> Path:
    """Default cache of probe features and prepared task CutSets: ``<cache root>/probe``."""
    return cache_root() / "probe"


def run_dir_for(output_file: str | Path) -> Path:
    """The run folder of a job whose result is one file: ``cuts.jsonl.gz`` -> ``cuts.run/``."""
    p = Path(output_file)
    name = p.name.split(".")[0] or p.name
    return p.parent / f"{name}.run"


def _log_to(path: Path) -> None:
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler):
            log.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
