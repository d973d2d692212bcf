"""The suite's table of optional capabilities and GradScaler options, and the dtype names of contracts.

What each method of a precision object promises, with the check for each promise, is written down
in the docstring of :mod:`mixprec.testing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

__all__ = ["CAPABILITIES", "SCALER_OPTIONS", "torch_dtype"]

#: Optional capabilities, by the name a backend lists in ``Backend.unsupported`` (for all its
#: precisions) or a contract in ``Contract.unsupported`` (for one), with what each promises. A
#: capability neither lists is required: its check runs and must pass.
CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "fused_optimizers": (
            "optimizer_step() with a fused optimizer (torch.optim.SGD(fused=True)) steps like the unfused one"
            " and, with a GradScaler, skips a step with non-finite gradients; unscale_gradients() unscales its"
            " gradients for clipping with a GradScaler, so that the step after clipping is bit for bit the unfused"
            " one's, and changes nothing without one (checked for precisions with float32 or float64 parameters)"
        ),
        "lbfgs_closure": (
            "optimizer_step(optimizer, closure=...) runs the closure, so LBFGS trains (precisions without a"
            " GradScaler; with one, LBFGS is refused, as in Lightning)"
        ),
    }
)

#: The GradScaler options the suite builds precisions with loss scaling from (checks that are about
#: an option pass values of their own). Powers of two keep scaled gradients exact, so "scaled by the
#: scale" is checked bit for bit; the growth interval is long enough that training never grows the
#: scale to overflow.
SCALER_OPTIONS: Mapping[str, float | int] = MappingProxyType(
    {"init_scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype a contract names (``"bfloat16"`` -> ``torch.bfloat16``).

    Raises:
        LookupError: this torch has no dtype of that name (``contract_declared`` reports it).
    """
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise LookupError(f"torch {torch.__version__} has no dtype torch.{name}")
    return dtype
