"""The one-line summary of a ``speechssl finetune`` run (``results.md`` and the CLI)."""

from __future__ import annotations

__all__ = ["render_finetune"]


def render_finetune(r: dict) -> str:
    """Test accuracy, or EER and minDCF of the held-out speakers, of one fine-tuning run."""
    what = (
        f"test accuracy {100 * r['accuracy']:.1f} %"
        if "accuracy" in r
        else f"EER {100 * r['eer']:.2f} %, minDCF(0.01) {r['min_dcf_0.01']:.3f} on {r['trials']} trials"
    )
    return f"Fine-tuned {r['upstream']} ({r['strategy']}) on {r['task']}: {what}."
