"""The checks of what ``forward_context()`` does to the tensors made and the weights changed inside it.

Two promises beside those of :mod:`mixprec.testing._checks_context` (autocast, state restored):

- inside it, new floating tensors are made in the precision's parameter dtype: the "true" precisions
  set the default dtype (Lightning's ``HalfPrecision`` and ``DoublePrecision``: "change the default
  tensor type when tensors get created during the module's forward"), the autocast ones keep
  float32;
- the Trainer's ``forward_context()`` wraps the whole ``training_step``, in which manual
  optimization steps the optimizer: a forward after a weight changed in place, inside the same
  context, must see the new weight, so autocast's cache of cast weights stays off there (Lightning's
  ``MixedPrecision`` passes ``cache_enabled=False``).
"""

from __future__ import annotations

import copy

import torch

from mixprec._contract import Contract
from mixprec.testing._base import TRAINER, Subject, _autocast, _close, _require, check, parameter_dtype

__all__ = ["forward_context_default_dtype", "forward_context_sees_in_place_updates"]


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


@check(applies=_autocast, targets=TRAINER)
def forward_context_sees_in_place_updates(subject: Subject, contract: Contract) -> None:
    """Inside one forward_context(), a forward after weights changed in place sees the new weights (no autocast cache).

    The Trainer runs the whole training_step in it, and manual optimization steps the optimizer there.
    """
    p = subject.make()
    model = p.convert_module(subject.model())
    x, _ = subject.data
    with p.forward_context():
        model(p.convert_input(x))
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.5)  # as an optimizer step in training_step does
        out = model(p.convert_input(x))
        # A copy has parameters of its own, which no cached cast can stand for.
        expected = copy.deepcopy(model)(p.convert_input(x))
    _close(
        out.detach(),
        expected.detach(),
        "after the weights changed in place inside forward_context(), the next forward in the same context used"
        " the casts of the old weights: autocast's cache is on. The Trainer runs training_step, where manual"
        " optimization steps, inside it: autocast with cache_enabled=False, as Lightning's MixedPrecision does",
    )
