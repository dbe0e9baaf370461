"""The one place that picks matplotlib's backend: reports are written headless (no display)."""

from __future__ import annotations


def pyplot():
    """Return ``matplotlib.pyplot`` with the non-interactive Agg backend selected.

    matplotlib is imported lazily so that modules needing no plot do not pay for it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
