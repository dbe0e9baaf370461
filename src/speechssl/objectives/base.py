"""The objective contract between :class:`speechssl.training.Trainer` and every method.

An objective is called once per micro-batch as ``objective(model, batch, step)`` and returns
``(loss, metrics)``. ``model`` is the (possibly DDP-wrapped) module: call it, not its
submodules, so DDP can sync gradients. ``metrics`` maps names to floats or scalar tensors
(the same names on every rank).

``step`` is a :class:`Step`: the iteration index and this iteration's value of every schedule
(learning rate, weight decay, EMA momentum, and the arrays the recipe precomputed, e.g. DINO's
teacher temperature). Schedules are data, indexed by the step, so an objective keeps no step
counter of its own and a resumed run continues every schedule exactly.

The hooks below are part of the contract; the defaults do nothing, so an objective overrides
only what it needs. They get the unwrapped model.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Objective", "Step"]


@dataclass(frozen=True)
class Step:
    """One iteration, as the trainer hands it to the objective and its hooks.

    Attributes:
        index: 0-based iteration (optimizer steps done before this one; logs and checkpoint
            names count steps done, ``index + 1``).
        lr / weight_decay: the optimizer's values for this step.
        momentum: EMA momentum of this step (``None`` without an EMA schedule).
        values: every recipe schedule at this step (``step["tau_t"]``).
    """

    index: int
    lr: float = 0.0
    weight_decay: float = 0.0
    momentum: float | None = None
    values: Mapping[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            known = ", ".join(sorted(self.values)) or "none"
            raise KeyError(
                f"no schedule {name!r} was given to the trainer (has: {known})"
            ) from None


class Objective(abc.ABC):
    """A training objective; subclass it and implement ``__call__`` (module docstring)."""

    @abc.abstractmethod
    def __call__(
        self, model: torch.nn.Module, batch: Any, step: Step
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def cancel_gradients(self, model: torch.nn.Module, step: Step) -> None:
        """After clipping, before the optimizer step (DINO drops its last layer's gradients
        during the first epoch here)."""
        return None

    def after_step(self, model: torch.nn.Module, step: Step) -> None:
        """After the optimizer step, under ``no_grad`` (an EMA teacher moves here with
        ``step.momentum``)."""
        return None

    def state_dict(self) -> dict[str, Any] | None:
        """State kept outside the model (DINO's center), saved in every checkpoint: tensors
        and plain containers only. ``None``: nothing to save."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        return None
