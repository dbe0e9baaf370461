"""The Markdown table of one ``speechssl probe`` run (``results.md`` and the CLI)."""

from __future__ import annotations

__all__ = ["render_probe"]


def render_probe(r: dict) -> str:
    """A short Markdown table of one probe's results."""
    lines = [
        f"# Probe: {r.get('upstream', '?')} on {r['task']} ({r['kind']}, label `{r['label']}`)",
        "",
    ]
    lines.append("Splits: " + ", ".join(f"{k} {v}" for k, v in r["split_sizes"].items()))
    lines.append("")
    if r["kind"] == "verification":
        lines += ["| layer | EER % | minDCF p=0.01 | minDCF p=0.05 |", "|---|---|---|---|"]
        for k, m in enumerate(r["per_layer"]):
            mark = " (reported)" if k == r["scored_layer"] else ""
            lines.append(
                f"| {k}{mark} | {100 * m['eer']:.2f} | {m['min_dcf_0.01']:.3f} | {m['min_dcf_0.05']:.3f} |"
            )
        lines.append(f"\n{r['trials']} trials, cosine scoring of centred mean-pooled features.")
        if "embed_metrics" in r:
            m = r["embed_metrics"]
            lines.append(
                f"The encoder's embed(): EER {100 * m['eer']:.2f} %, minDCF(0.01) {m['min_dcf_0.01']:.3f}, "
                f"minDCF(0.05) {m['min_dcf_0.05']:.3f}."
            )
        return "\n".join(lines)
    if r["kind"] == "ctc":
        return "\n".join(lines + _ctc_lines(r))
    s = r["summary"]
    lines += ["| metric | mean | std |", "|---|---|---|"]
    for k, v in s.items():
        if k in ("accuracy", "macro_f1", "dev_accuracy"):
            std = "n/a (one seed)" if v["std"] is None else f"{v['std']:.4f}"
            lines.append(f"| {k} | {v['mean']:.4f} | {std} |")
    w = ", ".join(f"{x:.2f}" for x in r["layer_weights"])
    lines.append(f"\nSeeds {r['seeds']}; {_layer_text(r)}; mean layer weights [{w}].")
    return "\n".join(lines)


def _layer_text(r: dict) -> str:
    if "layer_selection" in r:
        s = r["layer_selection"]
        devs = ", ".join(f"{k}: {v:.3g}" for k, v in enumerate(s["dev_by_layer"]))
        return f"layer {s['chosen']}, chosen on {s['by']} of seed {s['seed']} ({devs})"
    return f"layer {'weighted sum' if r['layer'] is None else r['layer']}"


def _ctc_lines(r: dict) -> list[str]:
    """PER and its edit operations (as % of reference tokens), then what was counted."""
    s, n = r["summary"], r["tokens"]["test"]

    def cell(k: str, scale: float) -> tuple[str, str]:
        v = s[k]
        std = "n/a (one seed)" if v["std"] is None else f"{scale * v['std']:.2f}"
        return f"{scale * v['mean']:.2f}", std

    lines = ["| metric (test, %) | mean | std |", "|---|---|---|"]
    lines.append("| PER | {} | {} |".format(*cell("per", 1.0)))
    for k in ("substitutions", "deletions", "insertions"):
        lines.append(f"| {k} | " + " | ".join(cell(k, 100.0 / max(n, 1))) + " |")
    lines.append("| dev PER (model selection) | {} | {} |".format(*cell("dev_per", 1.0)))
    w = ", ".join(f"{x:.2f}" for x in r["layer_weights"])
    unseen = r["unseen_tokens"]
    lines += [
        "",
        f"Head {r['head']}; {len(r['vocab'])} tokens + blank at {r['frame_rate']:g} Hz; "
        f"test {r['split_sizes']['test']} utterances, {n} tokens; predicting nothing scores 100 %.",
        f"Seeds {r['seeds']}; {_layer_text(r)}; mean layer weights [{w}].",
        "Tokens never seen in training (always errors): "
        + ", ".join(f"{k} {v}" for k, v in unseen.items())
        + (f" ({', '.join(r['unseen_types'][:10])})" if r["unseen_types"] else "")
        + "; cuts shorter than their label (left out of training): "
        + ", ".join(f"{k} {v}" for k, v in r["too_short"].items())
        + ".",
    ]
    return lines
