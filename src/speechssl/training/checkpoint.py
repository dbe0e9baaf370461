"""Checkpoints that a kill cannot corrupt and that load without unpickling objects.

Layout of ``<run_dir>/checkpoints/``::

    step-000100/
        model.safetensors   weights of the unwrapped model (safetensors)
        model.json          the recipe's model spec + {"step": 100}: enough to rebuild the model
        trainer.pt          tensors and plain containers only (optimizer, objective state,
                            per-rank data position and RNG states); torch.load(weights_only=True)
    latest                  text file naming the newest complete folder ("step-000100")

A save writes everything into ``.tmp-step-000100-<pid>/``, fsyncs it, renames it into place,
and only then replaces ``latest`` (write ``latest.tmp``, ``os.replace``). A kill at any moment
leaves either the old ``latest`` or the new one, both complete; stray ``.tmp-*`` folders are
ignored when loading and removed by the next save.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from speechssl.errors import UserError

__all__ = [
    "CheckpointError",
    "capture_rng",
    "find_latest",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

_STEP_DIR = re.compile(r"^step-(\d+)$")
_FILES = ("model.safetensors", "model.json", "trainer.pt")
_META_KEYS = ("step",)  # added to the spec by the trainer, ignored when comparing specs


class CheckpointError(UserError):
    """A checkpoint that cannot be used for this run (missing, damaged, or another model)."""


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    model_spec: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    keep_last: int = 3,
    keep_every: int = 0,
) -> Path:
    """Write checkpoint ``step`` atomically under ``root``, point ``latest`` at it, prune old ones.

    Retention: the newest ``keep_last`` checkpoints stay, and so does every checkpoint whose
    step is a multiple of ``keep_every`` (> 0), forever.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    name = step_dir_name(step)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    spec = {**(model_spec or {}), "step": step}
    _write_bytes(tmp / "model.json", (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode())
    torch.save(trainer_state, tmp / "trainer.pt")
    for f in ("model.safetensors", "trainer.pt"):
        with open(tmp / f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    final = root / name
    if final.exists():  # the same step saved again (e.g. max_minutes right after a save)
        old = root / f".tmp-old-{name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _write_bytes(root / "latest.tmp", (name + "\n").encode())
    os.replace(root / "latest.tmp", root / "latest")
    _fsync_dir(root)
    _prune(root, keep_last, keep_every, protect=name)
    return final


def _complete_steps(root: Path) -> list[tuple[int, Path]]:
    out = []
    for d in root.iterdir() if root.is_dir() else []:
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and all((d / f).is_file() for f in _FILES):
            out.append((int(m.group(1)), d))
    return sorted(out)


def _prune(root: Path, keep_last: int, keep_every: int, protect: str) -> None:
    steps = _complete_steps(root)
    keep = {d.name for _, d in steps[-max(keep_last, 1) :]} | {protect}
    if keep_every > 0:
        keep |= {d.name for s, d in steps if s % keep_every == 0}
    for _, d in steps:
        if d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def find_latest(root: str | Path) -> Path | None:
    """The folder ``latest`` names; if it is missing or damaged, the newest complete one."""
    root = Path(root)
    pointer = root / "latest"
    if pointer.is_file():
        d = root / pointer.read_text().strip()
        if _STEP_DIR.match(d.name) and all((d / f).is_file() for f in _FILES):
            return d
    steps = _complete_steps(root)
    return steps[-1][1] if steps else None


def _spec_without_meta(spec: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (spec or {}).items() if k not in _META_KEYS}


def _describe(spec: dict[str, Any]) -> str:
    kind = spec.get("kind", spec.get("name", "?"))
    rest = {k: v for k, v in spec.items() if k not in ("kind", "name")}
    return f"{kind} with config {json.dumps(rest, sort_keys=True)}"


def check_spec(ckpt: Path, expected: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's spec; :class:`CheckpointError` if it is not the model this run builds."""
    try:
        stored = json.loads((ckpt / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {ckpt} has no readable model.json ({exc})") from None
    # Round-trip through JSON so that tuples vs lists or int keys do not count as differences.
    want = json.loads(json.dumps(_spec_without_meta(expected)))
    have = _spec_without_meta(stored)
    if want != have:
        raise CheckpointError(
            f"checkpoint {ckpt} was written for model {_describe(have)}; "
            f"this run builds {_describe(want)}. Use another run folder, or the same model "
            "settings, to resume."
        )
    return stored


def load_checkpoint(
    ckpt: str | Path,
    model: torch.nn.Module,
    model_spec: dict[str, Any] | None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Check the spec, load the weights into ``model`` and return the trainer state.

    Nothing is unpickled: weights come from safetensors, the rest from
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
    """
    ckpt = Path(ckpt)
    check_spec(ckpt, model_spec)
    try:
        missing, unexpected = load_model(model, ckpt / "model.safetensors", strict=False)
    except Exception as exc:  # a damaged file or tensors of other shapes
        raise CheckpointError(f"cannot load weights from {ckpt}: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt} does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    try:
        return torch.load(ckpt / "trainer.pt", map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {ckpt / 'trainer.pt'}: {exc}") from None


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and lists (loadable with weights_only)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
