"""The check of the dtype of the tensors made inside ``forward_context()``.

Beside the promises of :mod:`mixprec.testing._checks_context` (autocast, state restored): inside
it, new floating tensors are made in the precision's parameter dtype. The "true" precisions set the
default dtype (Lightning's ``HalfPrecision`` and ``DoublePrecision``: "change the default tensor type
when tensors get created during the module's forward"), the autocast ones keep float32.
"""

from __future__ import annotations

import torch

from mixprec._contract import Contract
from mixprec.testing._base import Subject, _require, check, parameter_dtype

__all__ = ["forward_context_default_dtype"]


@check()
def forward_context_default_dtype(subject: Subject, contract: Contract) -> None:
    """Inside forward_context(), floating tensors are made in the contract's parameter dtype (the default dtype)."""
    p = subject.make()
    wanted = parameter_dtype(contract)
    with p.forward_context():
        default = torch.get_default_dtype()
        made = torch.ones(2).dtype
    _require(
        default == wanted and made == wanted,
        f"inside forward_context() the default dtype is {default} and torch.ones() makes {made}; the contract's"
        f" parameter dtype is {wanted}, which tensors made in the model's forward must have: set it for the context"
        " (Lightning's HalfPrecision and DoublePrecision do), and leave it float32 under autocast",
    )
