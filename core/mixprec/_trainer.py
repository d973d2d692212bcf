"""The Trainer's counterparts of :mod:`mixprec.precision`, for ``target="trainer"``.

``lightning.pytorch.Trainer(plugins=[...])`` accepts only ``lightning.pytorch`` precision plugins,
so these mirror the Fabric classes on the Trainer's base classes. They carry the names of the
Lightning classes they extend on purpose: the Trainer files a precision plugin's state in a
checkpoint under the class's ``__qualname__``, so with the same name a checkpoint moves between
Lightning's own plugin and mixprec's in both directions without losing the GradScaler state.

Importing this module imports ``lightning.pytorch``; nothing imports it unless a Trainer object is
asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lightning.pytorch.plugins import precision as lightning
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch.optim import Optimizer

from mixprec.precision import DeviceFSDP, ScalerGuard

if TYPE_CHECKING:
    pass

__all__ = ["FSDPPrecision", "MixedPrecision", "mixed_precision", "true_precision"]


class _ClipGuard(ScalerGuard):
    """The Trainer unscales and clips in ``clip_gradients``: refuse there for an optimizer that unscales itself."""

    def clip_gradients(
        self,
        optimizer: Optimizer,
        clip_val: int | float = 0.0,
        gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM,
    ) -> None:
        if clip_val > 0:
            self.refuse_unscaling(optimizer)
        super().clip_gradients(optimizer, clip_val, gradient_clip_algorithm)  # type: ignore[misc]


class MixedPrecision(_ClipGuard, lightning.MixedPrecision):
    """Lightning Trainer's ``MixedPrecision`` on the resolved device, with safe state loading."""


class FSDPPrecision(DeviceFSDP, _ClipGuard, lightning.FSDPPrecision):
    """Lightning Trainer's ``FSDPPrecision`` with the autocast device and the scaler taken from the request."""


def mixed_precision(
    precision: str, device: str, scaler: torch.amp.GradScaler | None, strategy: str | None
) -> lightning.Precision:
    """The Trainer's autocast precision; ``strategy`` is "fsdp" or None, as :mod:`mixprec.precision` resolved it."""
    if strategy == "fsdp":
        return FSDPPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]
    return MixedPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]


def true_precision(precision: str, strategy: str | None) -> lightning.Precision:
    """The Trainer's precision without autocast or scaler: Lightning's own classes serve as they are."""
    if strategy == "fsdp":
        return lightning.FSDPPrecision(precision)  # type: ignore[arg-type]
    if precision == "32-true":
        return lightning.Precision()
    if precision == "64-true":
        return lightning.DoublePrecision()
    return lightning.HalfPrecision(precision)  # type: ignore[arg-type]
