"""Build, save and load encoders by name: the one place that turns a spec into an Upstream.

Checkpoint format (a folder, written by :func:`save_upstream` or by the trainer):

* ``model.safetensors``: the state dict (safetensors only; nothing is ever unpickled);
* ``model.json``: ``{"kind": "transformer" | "ecapa" | "resnet" | "byola", "config": {...}}`` and
  optionally ``"prefix": "encoder."``, meaning the upstream's weights are the keys under that
  prefix (a training checkpoint that also holds heads or a teacher). Other keys are ignored.

:func:`load_upstream` accepts ``fbank``, ``mfcc``, a preset name (``tiny``, ``small``,
``base``: randomly initialised with seed 0, the no-pretraining floor), such a folder, a run
folder (``<run>/checkpoints/latest`` naming a step folder, else the highest ``step-*``), or a
transformers model directory (wav2vec2, hubert, wavlm, data2vec-audio).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechssl.config import from_dict
from speechssl.errors import UserError
from speechssl.models.byola_cnn import ByolaCnn
from speechssl.models.ecapa import EcapaTdnn
from speechssl.models.encoder_config import EcapaConfig, ResNetConfig
from speechssl.models.resnet import ResNet
from speechssl.models.student_config import ByolaCnnConfig
from speechssl.models.transformer import FrameTransformer
from speechssl.models.transformer_config import PRESETS, TransformerConfig
from speechssl.models.upstream import FbankUpstream, MfccUpstream, Upstream

__all__ = [
    "HF_MODEL_TYPES",
    "MODEL_KINDS",
    "build_model",
    "load_upstream",
    "model_spec",
    "resolve_checkpoint",
    "save_upstream",
    "upstream_id",
]

MODEL_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "transformer": (FrameTransformer, TransformerConfig),
    "ecapa": (EcapaTdnn, EcapaConfig),
    "resnet": (ResNet, ResNetConfig),
    "byola": (ByolaCnn, ByolaCnnConfig),
}
FEATURES = {"fbank": FbankUpstream, "mfcc": MfccUpstream}
HF_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
WEIGHTS, SPEC = "model.safetensors", "model.json"


def build_model(kind: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model of ``kind`` with ``config`` (unknown fields -> UserError)."""
    if kind not in MODEL_KINDS:
        raise UserError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    cls, cfg_cls = MODEL_KINDS[kind]
    try:
        cfg = from_dict(cfg_cls, dict(config or {}))
    except ValueError as exc:  # a config that __post_init__ rejects
        raise UserError(f"invalid {kind} config: {exc}") from None
    return cls(cfg)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"kind": ..., "config": {...}}`` (JSON-safe) from which :func:`build_model` rebuilds it."""
    for kind, (cls, _) in MODEL_KINDS.items():
        if type(model) is cls:
            return {
                "kind": kind,
                "config": json.loads(json.dumps(dataclasses.asdict(model.config))),
            }
    raise ValueError(f"{type(model).__name__} is not a registered model kind")


def save_upstream(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``folder``; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / SPEC).write_text(json.dumps(model_spec(model), indent=2) + "\n")
    return folder


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for ``path``: itself if it holds ``model.json``, else a run's
    latest step (``checkpoints/latest`` naming a folder, else the highest ``step-*``)."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in (SPEC, WEIGHTS):
        path = path.parent
    if (path / SPEC).is_file():
        return path
    ckpts = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = ckpts / "latest"
    if latest.is_file():
        target = ckpts / latest.read_text().strip()
        if not (target / SPEC).is_file():
            raise UserError(f"{latest} names {target}, which holds no {SPEC}")
        return target
    steps = [p for p in ckpts.glob("step-*") if (p / SPEC).is_file()]
    if steps:
        return max(steps, key=lambda p: int(re.sub(r"\D", "", p.name) or -1))
    raise UserError(
        f"{path} is neither a checkpoint ({SPEC} + {WEIGHTS}), a run folder with "
        "checkpoints/step-*, nor a transformers model directory (config.json)"
    )


def _is_hf_dir(path: Path) -> bool:
    """A folder with config.json that is not ours (a run folder may hold a config.json too)."""
    return (
        path.is_dir()
        and (path / "config.json").is_file()
        and not (path / SPEC).is_file()
        and not (path / "checkpoints").is_dir()
    )


def _hf_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def load_upstream(spec: str | Path, device: str | torch.device = "cpu") -> Upstream:
    """The upstream named by ``spec`` (see the module docstring), in eval mode on ``device``."""
    name = str(spec)
    if name in FEATURES:
        return FEATURES[name]().to(device).eval()
    if name in PRESETS:
        with torch.random.fork_rng(devices=[]):  # reproducible, and the caller's RNG untouched
            torch.manual_seed(0)
            model = FrameTransformer(dataclasses.replace(PRESETS[name]))
        return model.to(device).eval()
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(
            f"upstream {name!r} is neither a known name ({', '.join([*FEATURES, *PRESETS])}) "
            "nor an existing path"
        )
    if _is_hf_dir(path):
        model_type = _hf_model_type(path)
        if model_type not in HF_MODEL_TYPES:
            raise UserError(
                f"{path}/config.json has model_type {model_type!r}; supported: "
                + ", ".join(HF_MODEL_TYPES)
            )
        from speechssl.models.hf import HFUpstream

        return HFUpstream(path).to(device).eval()
    return _load_ours(resolve_checkpoint(path)).to(device).eval()


def _load_ours(folder: Path) -> Upstream:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / SPEC).read_text())
    except ValueError as exc:
        raise UserError(f"{folder / SPEC} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise UserError(f"{folder / SPEC} names no model kind")
    model = build_model(meta["kind"], meta.get("config") or {})
    if not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder} holds {SPEC} but no {WEIGHTS}")
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"cannot read {folder / WEIGHTS}: {exc}") from None
    prefix = meta.get("prefix") or ""
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        raise UserError(
            f"checkpoint {folder} does not match model config: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}, shape mismatches {_few(shapes)}"
        )
    model.load_state_dict(state)
    return model


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def upstream_id(spec: str | Path) -> str:
    """A string that changes when the upstream's weights change (for feature caches).

    Names are their own id; a checkpoint or HF directory is identified by the resolved path,
    size and modification time of its weights file.
    """
    name = str(spec)
    if name in FEATURES or name in PRESETS:
        return name
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"upstream {name!r} is neither a known name nor an existing path")
    if _is_hf_dir(path):
        candidates = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        if not candidates:
            raise UserError(f"{path} holds no weights (*.safetensors or *.bin)")
        weights = candidates
    else:
        weights = [resolve_checkpoint(path) / WEIGHTS]
    parts = []
    for w in weights:
        st = w.stat()
        parts.append(f"{w.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)
