"""Our waveform :class:`~speechssl.models.transformer.FrameTransformer` <-> transformers.

**Export** (:func:`export_hf`) writes the encoder as a transformers ``HubertModel`` folder
(``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``) that
``HubertModel.from_pretrained(folder)`` (or ``AutoModel``) loads with no missing or unexpected
key, and whose ``hidden_states`` equal ours on the same unpadded audio (eval mode, float
rounding). Why ``HubertModel``: its layer layout is ours, one for one (same conv stack, feature
projection, weight-normed positional conv, pre-LN blocks), it is the model family we pretrain
(masked prediction), and it carries no pretraining head that would be left uninitialised.
``Wav2Vec2Model`` has the same layout (:func:`init_from_hf` reads it) but brings quantizer and
adapter options that mean nothing here; data2vec-audio's convs and positional convs differ.
The options that make it exactly ours:

* ``feat_extract_norm="group"``, ``conv_bias=False``, ``feat_extract_activation="gelu"``,
  ``conv_dim=(conv_dim,) * 7``, ``conv_kernel=(10, 3, 3, 3, 3, 2, 2)``,
  ``conv_stride=(5, 2, 2, 2, 2, 2, 2)``: our waveform CNN (bias-free convs, a per-channel
  group norm after the first, GELU);
* ``feat_proj_layer_norm=True``: our LayerNorm before the projection to ``dim``;
* ``num_conv_pos_embeddings=conv_pos_kernel``, ``num_conv_pos_embedding_groups=
  conv_pos_groups``, ``conv_pos_batch_norm=False``: our positional conv (HF keeps it under
  weight norm over the kernel axis, ``dim=2``; the export writes ``g = |w|`` and ``v = w``,
  so ``g * v / |v|`` is our weight up to one rounding);
* ``do_stable_layer_norm=True``: pre-LN blocks with the LayerNorm after the last block, as
  ours (``hidden_states[-1]`` after the final norm, the others the raw residual stream), and
  ``tie_last_hidden_states=True``, without which transformers 5 returns the last block's output
  before that norm as ``hidden_states[-1]``;
* ``hidden_act="gelu"``, ``layer_norm_eps=1e-5``, ``activation_dropout=0`` (we have no dropout
  inside the feed-forward), ``layerdrop=0``; ``hidden_dropout`` / ``feat_proj_dropout`` =
  ``dropout``, ``attention_dropout`` = ``attn_dropout`` (training mode only).

Our fused ``qkv`` projection is split into ``q_proj``, ``k_proj``, ``v_proj``; the learned mask
embedding becomes ``masked_spec_embed``. SpecAugment options stay at HubertConfig's defaults
(a fine-tuning regulariser; they do not change the weights).

What is not the same, and so cannot be exported or is documented:

* the log-mel front-end (``model.frontend: logmel``) has no transformers counterpart: refused;
* padded batches: our first group norm takes its statistics over the valid samples only,
  transformers' over the whole padded row, so only unpadded (or equal-length) inputs are
  equal; single utterances always are;
* the pretraining heads and the EMA teacher are not part of the encoder and are not exported.

**Import** (:func:`init_from_hf`) loads a local HuBERT / wav2vec2 / data2vec-audio folder into
an encoder of a given config, tensor by tensor, with a report (:class:`InitReport`) of what was
loaded, what stays freshly initialised and which source tensors are unused. A tensor of another
shape is refused with its name; so are another depth, head count, conv strides or activation
(the same shapes would then compute something else). Source layer norms are not loaded when the
source is post-LN (``do_stable_layer_norm=False``, data2vec-audio): there they normalise the
residual stream after each sub-layer, ours normalise a sub-layer's input. A conv front-end with
layer norms (``feat_extract_norm="layer"``) gives its conv weights but not its norms or biases.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speechssl.errors import UserError
from speechssl.models.hf import _transformers
from speechssl.models.transformer import WAVEFORM_CONVS, FrameTransformer
from speechssl.models.transformer_config import TransformerConfig

__all__ = [
    "HF_CLASS",
    "INIT_MODEL_TYPES",
    "InitReport",
    "export_hf",
    "hubert_config",
    "init_from_hf",
    "to_hf_state_dict",
]

HF_CLASS = "HubertModel"
INIT_MODEL_TYPES = ("hubert", "wav2vec2", "data2vec-audio")
POS_WEIGHT = "encoder.pos_conv_embed.conv.weight"  # the effective (weight-normed) weight


@contextlib.contextmanager
def _quiet(tf):
    """No progress bars and no load reports from transformers (the library never prints)."""
    bars = tf.utils.logging.is_progress_bar_enabled()
    verbosity = tf.utils.logging.get_verbosity()
    tf.utils.logging.disable_progress_bar()
    tf.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        tf.utils.logging.set_verbosity(verbosity)
        if bars:
            tf.utils.logging.enable_progress_bar()


def _check_exportable(cfg: TransformerConfig) -> None:
    if cfg.frontend != "waveform":
        raise UserError(
            f"cannot export the {cfg.frontend} front-end to transformers ({HF_CLASS} takes the "
            "waveform): only encoders trained with model.frontend: waveform export exactly"
        )


def hubert_config(cfg: TransformerConfig):
    """The ``transformers.HubertConfig`` that is our encoder (see the module docstring)."""
    _check_exportable(cfg)
    tf = _transformers()
    return tf.HubertConfig(
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn_dim,
        hidden_act="gelu",
        hidden_dropout=cfg.dropout,
        activation_dropout=0.0,
        attention_dropout=cfg.attn_dropout,
        feat_proj_layer_norm=True,
        feat_proj_dropout=cfg.dropout,
        layerdrop=0.0,
        layer_norm_eps=1e-5,
        feat_extract_norm="group",
        feat_extract_activation="gelu",
        conv_dim=[cfg.conv_dim] * len(WAVEFORM_CONVS),
        conv_kernel=[k for k, _ in WAVEFORM_CONVS],
        conv_stride=[s for _, s in WAVEFORM_CONVS],
        conv_bias=False,
        num_conv_pos_embeddings=cfg.conv_pos_kernel,
        num_conv_pos_embedding_groups=cfg.conv_pos_groups,
        conv_pos_batch_norm=False,
        do_stable_layer_norm=True,
        # hidden_states[-1] after the final LayerNorm, as ours (transformers 5 HubertModel
        # otherwise returns the last block's output there and the normed one only as
        # last_hidden_state; transformers 4 ignores the key and already does this)
        tie_last_hidden_states=True,
        architectures=[HF_CLASS],
    )


def _key_map(layers: int) -> list[tuple[str, tuple[str, ...], str]]:
    """``(our key, HF keys, role)``; several HF keys are concatenated on dim 0 (qkv). The
    positional conv's weight is named by its effective weight :data:`POS_WEIGHT`."""
    rows: list[tuple[str, tuple[str, ...], str]] = []
    fe = "feature_extractor.conv_layers"
    for i in range(len(WAVEFORM_CONVS)):
        rows.append((f"frontend.convs.{i}.weight", (f"{fe}.{i}.conv.weight",), "conv"))
    rows += [
        ("frontend.norm_weight", (f"{fe}.0.layer_norm.weight",), "conv_norm"),
        ("frontend.norm_bias", (f"{fe}.0.layer_norm.bias",), "conv_norm"),
        ("frontend_norm.weight", ("feature_projection.layer_norm.weight",), "other"),
        ("frontend_norm.bias", ("feature_projection.layer_norm.bias",), "other"),
        ("frontend_proj.weight", ("feature_projection.projection.weight",), "other"),
        ("frontend_proj.bias", ("feature_projection.projection.bias",), "other"),
        ("mask_embedding", ("masked_spec_embed",), "other"),
        ("pos_conv.weight", (POS_WEIGHT,), "pos"),
        ("pos_conv.bias", ("encoder.pos_conv_embed.conv.bias",), "pos"),
    ]
    for i in range(layers):
        hf = f"encoder.layers.{i}"
        for p in ("weight", "bias"):
            rows += [
                (f"blocks.{i}.ln1.{p}", (f"{hf}.layer_norm.{p}",), "ln"),
                (
                    f"blocks.{i}.qkv.{p}",
                    tuple(f"{hf}.attention.{n}_proj.{p}" for n in "qkv"),
                    "other",
                ),
                (f"blocks.{i}.proj.{p}", (f"{hf}.attention.out_proj.{p}",), "other"),
                (f"blocks.{i}.ln2.{p}", (f"{hf}.final_layer_norm.{p}",), "ln"),
                (f"blocks.{i}.fc1.{p}", (f"{hf}.feed_forward.intermediate_dense.{p}",), "other"),
                (f"blocks.{i}.fc2.{p}", (f"{hf}.feed_forward.output_dense.{p}",), "other"),
            ]
    rows += [(f"final_norm.{p}", (f"encoder.layer_norm.{p}",), "ln") for p in ("weight", "bias")]
    return rows


def to_hf_state_dict(encoder: FrameTransformer) -> dict[str, torch.Tensor]:
    """Our weights under HF names, the positional conv as its effective weight
    :data:`POS_WEIGHT` (:func:`export_hf` turns it into weight-norm ``g``, ``v``)."""
    _check_exportable(encoder.config)
    ours = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, hf_keys, _ in _key_map(encoder.config.layers):
        parts = ours.pop(key).chunk(len(hf_keys), dim=0)
        out.update({h: p.clone().contiguous() for h, p in zip(hf_keys, parts, strict=True)})
    assert not ours, f"unmapped weights {sorted(ours)}"  # a new parameter needs a mapping
    return out


def _weight_norm_keys(model) -> tuple[str, str]:
    """The names (g, v) under which this transformers version keeps the pos conv's weight."""
    keys = model.state_dict()
    base = POS_WEIGHT.rsplit(".", 1)[0]
    for g, v in (("parametrizations.weight.original0", "parametrizations.weight.original1"),
                 ("weight_g", "weight_v")):  # fmt: skip
        if f"{base}.{g}" in keys:
            return f"{base}.{g}", f"{base}.{v}"
    raise RuntimeError("transformers' HubertModel keeps no weight-normed positional conv")


def export_hf(encoder: FrameTransformer, out: str | Path) -> Path:
    """Write ``encoder`` as a transformers ``HubertModel`` folder ``out``; returns it."""
    tf = _transformers()
    config = hubert_config(encoder.config)
    state = to_hf_state_dict(encoder)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten at once
        model = tf.HubertModel(config).eval()
    g_key, v_key = _weight_norm_keys(model)
    w = state.pop(POS_WEIGHT)
    state[g_key] = torch.linalg.vector_norm(w, dim=(0, 1), keepdim=True)
    state[v_key] = w
    model.load_state_dict(state, strict=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet(tf):
        model.save_pretrained(str(out))
    # Raw 16 kHz waveform, as our encoder takes it (no normalisation); the mask lets HF zero
    # padded frames and keep them out of attention, as ours does.
    tf.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=False,
        return_attention_mask=True,
    ).save_pretrained(str(out))
    return out


@dataclass
class InitReport:
    """What :func:`init_from_hf` did, key by key (our keys; HF keys for the unused ones)."""

    source: str
    model_type: str
    loaded: dict[str, list[str]] = field(default_factory=dict)  # ours -> the HF tensors
    fresh: dict[str, str] = field(default_factory=dict)  # ours -> why it was not loaded
    unused: dict[str, str] = field(default_factory=dict)  # HF key -> why it was not used

    def summary(self) -> str:
        total = len(self.loaded) + len(self.fresh)
        fresh = f": {_few(list(self.fresh))}" if self.fresh else ""
        return (
            f"init-from {self.source} ({self.model_type}): loaded {len(self.loaded)} of "
            f"{total} tensors, {len(self.fresh)} initialised fresh{fresh}; "
            f"{len(self.unused)} source tensors unused"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model_type": self.model_type,
            "summary": self.summary(),
            "loaded": self.loaded,
            "fresh": self.fresh,
            "unused": self.unused,
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _few(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _load_hf(path: Path):
    """The transformers base model at ``path`` (no download), its model type, the keys its
    folder did not provide (randomly initialised by transformers: never reported as loaded)
    and the folder's keys outside the base model (heads)."""
    tf = _transformers()
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a transformers model folder (no config.json)")
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot read {path / 'config.json'}: {exc}") from None
    if model_type not in INIT_MODEL_TYPES:
        raise UserError(
            f"{path} holds a {model_type!r} model; init-from takes {', '.join(INIT_MODEL_TYPES)}"
        )
    try:
        with _quiet(tf):  # our report says what loaded; transformers' own would repeat it
            model, info = tf.AutoModel.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load transformers model from {path}: {exc}") from None
    return model, model_type, set(info.get("missing_keys") or ()), info.get("unexpected_keys") or ()


def _source_state(model) -> dict[str, torch.Tensor]:
    """The base model's tensors, a weight-normed positional conv as its effective weight."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    base = POS_WEIGHT.rsplit(".", 1)[0]
    normed = [k for k in state if k.startswith(base + ".") and k != base + ".bias"]
    if normed:
        for k in normed:
            del state[k]
        with torch.no_grad():
            state[POS_WEIGHT] = model.encoder.pos_conv_embed.conv.weight.detach().cpu().clone()
    return state


def _check_structure(hf_cfg, cfg: TransformerConfig, path: Path) -> None:
    """What equal shapes would not catch: depth, heads, strides, activations."""
    checks = [
        ("num_hidden_layers", hf_cfg.num_hidden_layers, cfg.layers, "layers"),
        ("num_attention_heads", hf_cfg.num_attention_heads, cfg.heads, "heads"),
        ("conv_stride", tuple(hf_cfg.conv_stride), tuple(s for _, s in WAVEFORM_CONVS), None),
        ("conv_kernel", tuple(hf_cfg.conv_kernel), tuple(k for k, _ in WAVEFORM_CONVS), None),
        ("hidden_act", hf_cfg.hidden_act, "gelu", None),
        ("feat_extract_activation", hf_cfg.feat_extract_activation, "gelu", None),
    ]
    for name, theirs, ours, field_name in checks:
        if theirs != ours:
            hint = f" (set the model's {field_name} to match)" if field_name else ""
            raise UserError(f"{path} has {name}={theirs!r}, the model {ours!r}{hint}")


def init_from_hf(encoder: FrameTransformer, path: str | Path) -> InitReport:
    """Load the tensors of the transformers folder ``path`` that are ours into ``encoder``
    (in place; see the module docstring); returns the key-by-key report."""
    cfg = encoder.config
    path = Path(path).expanduser()
    if cfg.frontend != "waveform":
        raise UserError(
            "init-from a transformers model needs the waveform front-end "
            "(model.frontend: waveform); the log-mel front-end has no counterpart there"
        )
    model, model_type, missing, unexpected = _load_hf(path)
    hf_cfg = model.config
    _check_structure(hf_cfg, cfg, path)
    source = _source_state(model)
    base = POS_WEIGHT.rsplit(".", 1)[0]
    if any(k.startswith(base + ".") and not k.endswith(".bias") for k in missing):
        missing.add(POS_WEIGHT)  # weight norm's g or v not in the folder
    post_ln = model_type == "data2vec-audio" or not getattr(hf_cfg, "do_stable_layer_norm", False)
    # data2vec-audio's convs always have layer norms (its config has no feat_extract_norm)
    layer_norm_convs = (
        model_type == "data2vec-audio" or getattr(hf_cfg, "feat_extract_norm", "group") == "layer"
    )
    report = InitReport(str(path), model_type)
    own = encoder.state_dict()
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    skipped: dict[str, str] = {}  # HF key -> why its counterpart was not loaded
    for key, hf_keys, role in _key_map(cfg.layers):
        why = None
        if role == "ln" and post_ln:
            why = "the source is post-LN: its layer norms sit elsewhere"
        elif role == "conv_norm" and layer_norm_convs:
            why = "the source's conv front-end uses layer norms, not a group norm"
        if why is not None:
            report.fresh[key] = why
            skipped.update(dict.fromkeys(hf_keys, why))
            continue
        absent = [h for h in hf_keys if h not in source or h in missing]
        if absent:
            report.fresh[key] = f"not in the source ({', '.join(absent)})"
            continue
        want = tuple(own[key].shape)
        part = (want[0] // len(hf_keys), *want[1:])  # q, k, v: a third of our qkv each
        for h in hf_keys:
            if tuple(source[h].shape) != part:
                raise UserError(
                    f"{path}: tensor {h} has shape {tuple(source[h].shape)}, the model "
                    f"expects {part} (for its {key}); choose a model config of the source's sizes"
                )
        new[key] = torch.cat([source[h] for h in hf_keys], 0).to(own[key].dtype)
        report.loaded[key] = list(hf_keys)
        used.update(hf_keys)
    for k in sorted(set(source) - used):
        if k in missing:
            continue  # transformers' own random init, not the folder's
        if k in skipped:
            why = skipped[k]
        elif "layer_norm" in k:
            why = "a layer norm with no counterpart here"
        elif k.startswith("feature_extractor.") and k.endswith(".conv.bias"):
            why = "our convs have no bias"
        elif k.startswith("encoder.pos_conv_embed."):
            why = "a positional conv of another design (data2vec-audio's conv stack)"
        else:
            why = "no counterpart in the model"
        report.unused[k] = why
    for k in sorted(unexpected):
        report.unused[k] = "not part of the base model (a pretraining or task head)"
    encoder.load_state_dict({**own, **new}, strict=True)
    return report
