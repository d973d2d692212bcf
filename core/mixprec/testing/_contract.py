"""The suite's GradScaler options and the dtype names of contracts; the capabilities come from the core's vocabulary.

What each method of a precision object promises, with the check for each promise, is written down
in the docstring of :mod:`mixprec.testing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

from mixprec._vocabulary import CAPABILITIES

__all__ = ["CAPABILITIES", "SCALER_OPTIONS", "torch_dtype"]

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
