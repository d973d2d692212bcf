"""The checks of ``optimizer_step(optimizer, closure=...)`` with a GradScaler (torch's ``GradScaler.step`` takes none).

Fabric's ``optimizer.step(closure)`` reaches ``optimizer_step(optimizer, closure=closure)``. With a
GradScaler the object runs the closure itself, once and with grad enabled (as torch's optimizers run
it, even when the step is called under ``torch.no_grad()``), then steps through the scaler, and
returns the closure's loss. A closure that raises leaves the GradScaler as it was before the step:
the exception reaches the caller, and the next step unscales, clips and steps as usual.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mixprec._contract import Contract
from mixprec.testing._base import (
    FABRIC,
    CheckFailed,
    Subject,
    _close,
    _loss,
    _param_groups,
    _require,
    _scaler,
    _sgd_step,
    _true_gradients,
    _weights,
    check,
)

__all__ = ["closure_that_raises_leaves_the_scaler_ready", "scaled_step_runs_closure"]


class _ClosureFailed(Exception):
    """What the suite's closure raises after its backward and unscaling."""


@check(applies=_scaler, targets=FABRIC)
def scaled_step_runs_closure(subject: Subject, contract: Contract) -> None:
    """With a GradScaler, optimizer_step(SGD, closure=c), called under torch.no_grad(), runs the closure once with
    grad enabled, steps with the true gradients and returns the closure's loss."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    expected = _sgd_step(model, _true_gradients(model, subject))
    losses: list[Tensor] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _loss(model, subject)
        p.backward(loss, model)
        losses.append(loss)
        return loss

    try:
        with torch.no_grad():  # torch's optimizers run a closure with grad enabled whatever the caller's mode
            result = p.optimizer_step(optimizer, closure=closure)
    except Exception as exc:
        raise CheckFailed(
            f"optimizer_step(SGD, closure=...) raised {type(exc).__name__}: {(str(exc) or ' ').splitlines()[0]}."
            " torch's GradScaler.step takes no closure: run it first (under torch.enable_grad()), then step"
            " through the scaler (mixprec.precision.AutocastPrecision does)"
        ) from None
    _require(len(losses) == 1, f"optimizer_step(SGD, closure=...) ran the closure {len(losses)} times, not once")
    _require(
        result is losses[0],
        f"optimizer_step(SGD, closure=...) returned {result!r}, not the closure's loss, as optimizer.step(closure)"
        " returns it",
    )
    _close(_weights(model), expected, "the step after the closure did not apply the true gradients")


@check(applies=_scaler, targets=FABRIC)
def closure_that_raises_leaves_the_scaler_ready(subject: Subject, contract: Contract) -> None:
    """A closure that unscales (clips) and then raises: optimizer_step raises that exception, and the next step
    unscales and steps as usual, with the true gradients."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))

    def failing() -> Tensor:
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        p.unscale_gradients(optimizer)  # fabric.clip_gradients inside the closure
        raise _ClosureFailed("the closure's own error")

    try:
        p.optimizer_step(optimizer, closure=failing)
    except _ClosureFailed:
        pass
    except Exception as exc:
        raise CheckFailed(
            f"a closure that raised made optimizer_step raise {type(exc).__name__}:"
            f" {(str(exc) or ' ').splitlines()[0]}, not the closure's own exception: let it through"
        ) from None
    else:
        raise CheckFailed("a closure raised, and optimizer_step returned: let the closure's exception through")
    expected = _sgd_step(model, _true_gradients(model, subject))
    optimizer.zero_grad()
    p.backward(_loss(model, subject), model)
    try:
        p.unscale_gradients(optimizer)
        p.optimizer_step(optimizer)
    except Exception as exc:
        raise CheckFailed(
            f"after a closure that unscaled and raised, the next step's unscale_gradients or optimizer_step raised"
            f" {type(exc).__name__}: {(str(exc) or ' ').splitlines()[0]}. The failed step never happened: forget its"
            " unscaling (the GradScaler's stage for the optimizer) when the closure raises"
        ) from None
    _close(_weights(model), expected, "the step after a failed closure did not apply the true gradients")
