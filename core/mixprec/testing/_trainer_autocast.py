"""The check of the Trainer's object: its forward_context() autocasts to the contract's dtype, as the Fabric one does.

The Trainer's precision classes pick autocast's dtype themselves: Lightning's ``MixedPrecision``
(``lightning.pytorch``) takes bfloat16 only for the string "bf16-mixed" and float16 for anything
else, so a Trainer class for another precision string ("fp8-mixed") that keeps Lightning's
``autocast_context_manager`` trains in float16 without a GradScaler. The module-conversion checks
train such an object without looking at its dtype; this one does.
"""

from __future__ import annotations

import torch

from mixprec._contract import Contract
from mixprec._errors import PrecisionError
from mixprec.testing._checks import CheckSkipped, Subject, _check, _require, compute_dtype
from mixprec.testing._conversion import _make

__all__ = ["trainer_forward_dtype"]


def _trainer_autocast(contract: Contract) -> bool:
    # The contracts whose objects the suite builds for the Trainer (see trainer_converts).
    return contract.autocast and bool(contract.converts_modules)


@_check(applies=_trainer_autocast)
def trainer_forward_dtype(subject: Subject, contract: Contract) -> None:
    """The object for the Trainer (target="trainer") autocasts inside forward_context() to the contract's
    compute_dtype, on the requested device."""
    try:
        p = _make(subject, target="trainer")
    except PrecisionError as exc:
        raise CheckSkipped(
            f"there is no object for the Trainer to check ({exc}); trainer_converts reports it"
        ) from None
    device_type = subject.device.type
    x, _ = subject.data
    with p.forward_context():
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
        matmul = (x @ x.T).dtype
    want = compute_dtype(contract)
    _require(
        enabled and dtype == want == matmul,
        f"inside the Trainer object's forward_context() autocast for {device_type!r} is"
        f" {'on' if enabled else 'off'} with {dtype} and a matmul computes in {matmul}; the contract computes in"
        f" {want}: override autocast_context_manager() to return torch.autocast(self.device, dtype={want})"
        " (Lightning's picks float16 for any precision string but 'bf16-mixed')",
    )
