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

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins import precision as lightning
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch.optim import Optimizer
from typing_extensions import override

from mixprec.precision import (
    MIXED_DTYPES,
    lightning_scaler_ignored,
    load_scaler_state,
    refuse_unscaling_inside_step,
)

if TYPE_CHECKING:
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

__all__ = ["FSDPPrecision", "MixedPrecision", "mixed_precision", "true_precision"]


class MixedPrecision(lightning.MixedPrecision):
    """Lightning Trainer's ``MixedPrecision`` on the resolved device, with safe state loading."""

    @override
    def clip_gradients(
        self,
        optimizer: Optimizer,
        clip_val: int | float = 0.0,
        gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM,
    ) -> None:
        if clip_val > 0 and self.scaler is not None:
            refuse_unscaling_inside_step(optimizer)
        super().clip_gradients(optimizer, clip_val, gradient_clip_algorithm)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)

    def __repr__(self) -> str:
        return f"mixprec {type(self).__name__}(precision={self.precision!r}, device={self.device!r})"


class FSDPPrecision(lightning.FSDPPrecision):
    """Lightning Trainer's ``FSDPPrecision`` with the autocast device and the scaler taken from the request."""

    def __init__(self, precision: Any, device: str, scaler: ShardedGradScaler | None = None) -> None:
        with lightning_scaler_ignored():
            super().__init__(precision)
        self.device = device
        self.scaler = scaler

    @override
    def forward_context(self) -> AbstractContextManager[Any]:
        if self.precision in MIXED_DTYPES:
            return torch.autocast(self.device, dtype=MIXED_DTYPES[self.precision])
        return super().forward_context()

    @override
    def clip_gradients(
        self,
        optimizer: Optimizer,
        clip_val: int | float = 0.0,
        gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM,
    ) -> None:
        if clip_val > 0 and self.scaler is not None:
            refuse_unscaling_inside_step(optimizer)
        super().clip_gradients(optimizer, clip_val, gradient_clip_algorithm)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)

    def __repr__(self) -> str:
        return f"mixprec {type(self).__name__}(precision={self.precision!r}, device={self.device!r})"


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
