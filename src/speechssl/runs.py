"""Run folders: everything needed to reproduce a job lives beside its results.

Each job writes ``config.yaml`` (the resolved config), ``run.json`` (seed, package
version, command line, host, start time) and ``log.txt`` into its run folder.
"""

from __future__ import annotations

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


def start_run(run_dir: str | Path, job: str, config: Any, seed: int | None = None) -> Path:
    """Create ``run_dir`` and record the job's config, seed and version; log to its log.txt."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run folder {run_dir}: {exc.strerror}") from None
    save_yaml(config, run_dir / "config.yaml")
    info = {
        "job": job,
        "seed": seed,
        "speechssl_version": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    _log_to(run_dir / "log.txt")
    log.info("%s started (speechssl %s, seed %s)", job, __version__, seed)
    return run_dir


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
