"""The Trainer's counterparts of :mod:`mixprec.precision`, for ``target="trainer"``.

``lightning.pytorch.Trainer(plugins=[...])`` accepts only ``lightning.pytorch`` precision plugins,
so these mirror the Fabric classes on the Trainer's base classes. Importing this module imports
``lightning.pytorch``; nothing imports it unless a Trainer object is asked for.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.precision import (
    DoublePrecision,
    FSDPPrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
)
from typing_extensions import override

from mixprec.precision import MIXED_DTYPES, load_scaler_state

__all__ = ["TrainerAutocastFSDPPrecision", "TrainerAutocastPrecision", "mixed_precision", "true_precision"]


class TrainerAutocastPrecision(MixedPrecision):
    """Lightning Trainer's ``MixedPrecision`` on the resolved device, with safe state loading."""

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r})"


class TrainerAutocastFSDPPrecision(FSDPPrecision):
    """Lightning Trainer's ``FSDPPrecision`` with the autocast device taken from the request."""

    def __init__(self, precision: Any, device: str, scaler: Any = None) -> None:
        super().__init__(precision, scaler=scaler)
        self.device = device

    @override
    def forward_context(self) -> Any:
        if "mixed" in self.precision:
            return torch.autocast(self.device, dtype=MIXED_DTYPES[self.precision])
        return super().forward_context()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)


def mixed_precision(precision: str, device: str, scaler: Any, strategy: str | None) -> Precision:
    if strategy == "fsdp":
        return TrainerAutocastFSDPPrecision(precision, device, scaler=scaler)
    return TrainerAutocastPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]


def true_precision(precision: str, strategy: str | None) -> Precision:
    if strategy == "fsdp":
        return FSDPPrecision(precision)  # type: ignore[arg-type]
    if precision == "32-true":
        return Precision()
    if precision == "64-true":
        return DoublePrecision()
    return HalfPrecision(precision)  # type: ignore[arg-type]
