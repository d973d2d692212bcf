"""What each standard precision promises, and the optional capabilities a backend may declare it lacks.

The contract of a precision is fixed by its name, not by the backend that serves it: "bf16-mixed"
means autocast to bfloat16 with float32 parameters and no GradScaler on every device, so the suite
holds every backend to the same table. A precision string outside the table (a backend's own) has
no contract here, and its checks are reported as skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

__all__ = ["CAPABILITIES", "CONTRACTS", "SCALER_OPTIONS", "TRAINING_RTOL", "Contract"]

#: Optional capabilities, by the name a backend lists in ``Backend.unsupported``, with what each promises.
#: A capability the backend does not list is required: its check runs and must pass.
CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "fused_optimizers": (
            "optimizer_step() with a fused optimizer (torch.optim.SGD(fused=True)) steps like the unfused one"
            " and, with a GradScaler, skips a step with non-finite gradients (checked for precisions with"
            " float32 or float64 parameters)"
        ),
        "lbfgs_closure": (
            "optimizer_step(optimizer, closure=...) runs the closure, so LBFGS trains (precisions without a"
            " GradScaler; with one, LBFGS is refused, as in Lightning)"
        ),
    }
)

#: How far the loss of the suite's small model trained under a precision may end from the same model
#: trained in float32, relative to the float32 loss, by the dtype the precision computes in. Measured on
#: CPU (30 SGD steps take the loss from 0.72 to 0.033): bfloat16 ends within 1% ("bf16-true"; 0.03% for
#: "bf16-mixed"), float16 within 0.1%, float32/float64 exactly. The bounds leave room for other devices'
#: kernels, while a defect that stalls or corrupts training (an unscaled loss, stale autocast casts) lands
#: far outside.
TRAINING_RTOL: Mapping[torch.dtype, float] = MappingProxyType(
    {torch.float64: 1e-3, torch.float32: 1e-3, torch.float16: 0.02, torch.bfloat16: 0.1}
)

#: The GradScaler options the suite builds precisions with a scaler from. Powers of two keep scaled
#: gradients exact, so "scaled by the scale" is checked bit for bit; the default growth interval is long
#: enough that training never grows the scale to overflow.
SCALER_OPTIONS: Mapping[str, float | int] = MappingProxyType(
    {"init_scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
)


@dataclass(frozen=True)
class Contract:
    """What one precision promises, whatever the backend and device.

    Args:
        precision: the canonical precision string.
        dtype: the dtype ``nn.Linear`` computes in under ``forward_context()``.
        autocast: ``forward_context()`` is ``torch.autocast(device_type, dtype)`` and parameters stay float32.
        scaler: the object carries an enabled ``torch.amp.GradScaler``.
        converts_io: ``convert_input`` casts floating tensors to ``dtype`` and ``convert_output`` casts them
            back to ``torch.get_default_dtype()`` (Lightning's "32-true" leaves both untouched).
    """

    precision: str
    dtype: torch.dtype
    autocast: bool
    scaler: bool
    converts_io: bool

    @property
    def parameter_dtype(self) -> torch.dtype:
        """The dtype of a module's parameters after ``convert_module``."""
        return torch.float32 if self.autocast else self.dtype

    @property
    def training_rtol(self) -> float:
        return TRAINING_RTOL[self.dtype]


#: Every precision with a contract; a backend offering one of these is held to it.
CONTRACTS: Mapping[str, Contract] = MappingProxyType(
    {
        c.precision: c
        for c in (
            Contract("16-mixed", torch.float16, autocast=True, scaler=True, converts_io=True),
            Contract("bf16-mixed", torch.bfloat16, autocast=True, scaler=False, converts_io=True),
            Contract("16-true", torch.float16, autocast=False, scaler=False, converts_io=True),
            Contract("bf16-true", torch.bfloat16, autocast=False, scaler=False, converts_io=True),
            Contract("32-true", torch.float32, autocast=False, scaler=False, converts_io=False),
            Contract("64-true", torch.float64, autocast=False, scaler=False, converts_io=True),
        )
    }
)
