"""The check that an object pickles: the copy is the same precision, keeps the GradScaler's state, and trains.

``strategy="ddp_spawn"`` (and every launcher that starts processes by spawning) pickles the
strategy with its precision plugin and unpickles it in each process; docs/distributed.md promises
that every object mixprec hands out pickles. A copy that loses the scale starts each process's
training from the initial scale, and processes that disagree about it step differently.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import torch
from torch import Tensor

from mixprec._contract import Contract
from mixprec.testing._base import (
    _LR,
    CheckFailed,
    Subject,
    _loss,
    _poison,
    _require,
    _weights,
    check,
)
from mixprec.testing._rounding import apart_in_roundings

__all__ = ["pickle_round_trip"]


def _trained(p: Any, subject: Subject) -> None:
    """Move the object's state away from a new one's: with a GradScaler, a skipped step (backoff) and a finite one.

    A step that raises leaves the state as it is: the step checks say why.
    """
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    for poisoned in (True, False):
        optimizer.zero_grad()
        try:
            p.backward(_loss(model, subject), model)
            if poisoned:
                _poison(model, math.inf)
            p.optimizer_step(optimizer)
        except Exception:  # any failure of a step is the step checks' to report
            return


def _same_state(copied: dict[str, Any], original: dict[str, Any]) -> bool:
    return copied.keys() == original.keys() and all(
        type(copied[k]) is type(original[k]) and copied[k] == original[k] for k in original
    )


@check()
def pickle_round_trip(subject: Subject, contract: Contract) -> None:
    """The object, used for a step, pickles (as ddp_spawn pickles it); the copy is the same precision with the same
    GradScaler state (its scale and growth tracker), and computes and steps as the original does."""
    p = subject.make()
    fabric = subject.target == "fabric"  # the Trainer's objects step through the Trainer's loop, with a closure
    if contract.loss_scaling and fabric:
        _trained(p, subject)
    try:
        copy = pickle.loads(pickle.dumps(p))
    except Exception as exc:
        raise CheckFailed(
            f"the object does not pickle: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}."
            " strategy='ddp_spawn' pickles the precision plugin: keep no lambda, local function, open file, lock or"
            " generator in it (a module-level class or function instead)"
        ) from None
    wanted = (type(p), p.precision, getattr(p, "device", None))
    got = (type(copy), copy.precision, getattr(copy, "device", None))
    _require(
        got == wanted,
        f"the unpickled copy is a {got[0].__qualname__} for {got[1]!r} on {got[2]!r}; it must be what was pickled, a"
        f" {wanted[0].__qualname__} for {wanted[1]!r} on {wanted[2]!r}",
    )
    scaler, copied_scaler = getattr(p, "scaler", None), getattr(copy, "scaler", None)
    if isinstance(scaler, torch.amp.GradScaler):
        original = scaler.state_dict()
        copied: dict[str, Any] = copied_scaler.state_dict() if isinstance(copied_scaler, torch.amp.GradScaler) else {}
        _require(
            _same_state(copied, original),
            f"the unpickled copy's GradScaler holds {copied!r}, the original's {original!r}: pickling must keep the"
            " GradScaler's state (torch's GradScaler pickles it; do not rebuild the scaler in __reduce__ or"
            " __setstate__)",
        )
    (dtype, start, stepped), (copy_dtype, _, copy_stepped) = (
        _behaviour(p, subject, fabric),
        _behaviour(copy, subject, fabric),
    )
    _require(
        copy_dtype == dtype,
        f"inside forward_context() the unpickled copy's model computes {copy_dtype}, the original's {dtype}: the copy"
        " must do what the original does",
    )
    if stepped is None or copy_stepped is None:
        return  # no step to compare: the step checks say why, or the Trainer's loop steps its objects
    apart = apart_in_roundings(start, stepped, copy_stepped)
    _require(
        apart <= 1,
        f"a step through the unpickled copy lands {apart:.3g} times as far from the same step through the original as"
        " two roundings to the parameters' dtype can take them apart: the copy must step as the original does",
    )


def _behaviour(q: Any, subject: Subject, step: bool) -> tuple[str, list[Tensor], list[Tensor] | None]:
    """What ``q`` computes in (or the error it raises) inside forward_context(), and the weights before and after
    one SGD step through it (None when the step raises, or without ``step``)."""
    model = q.convert_module(subject.model())
    x, _ = subject.data
    try:
        with torch.no_grad(), q.forward_context():
            computes = f"in {model(q.convert_input(x)).dtype}"
    except Exception as exc:  # the forward checks report a forward that raises
        computes = f"nothing: it raises {type(exc).__name__}"
    before = _weights(model)
    if not step:
        return computes, before, None
    try:
        q.backward(_loss(model, subject), model)
        q.optimizer_step(torch.optim.SGD(model.parameters(), lr=_LR))
    except Exception:  # the step checks report a step that raises
        return computes, before, None
    return computes, before, _weights(model)
