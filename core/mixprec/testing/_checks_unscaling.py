"""The checks of what a GradScaler cannot unscale: ``unscale_gradients`` refuses it with ``mixprec.UnscalingError``.

torch's ``GradScaler`` unscales an optimizer's gradients once between two updates of the scale: a
second ``unscale_`` before the step, or an ``unscale_`` after ``scaler.step(optimizer)`` and before
``scaler.update()``, is torch's bare ``RuntimeError``. An object with a GradScaler refuses both in
``unscale_gradients`` (which ``fabric.clip_gradients`` calls) with a
:class:`~mixprec.UnscalingError`, a :class:`~mixprec.PrecisionError` that says how to clip twice or
where to clip, before torch is asked, so the gradients stay as they were.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mixprec._contract import Contract
from mixprec.testing._base import FABRIC, CheckFailed, Subject, _loss, _param_groups, _require, _scaler, check

__all__ = ["unscaling_refused_where_torch_cannot"]


def _gradients(model: torch.nn.Module) -> list[Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _refused(p: object, optimizer: torch.optim.Optimizer, model: torch.nn.Module, when: str) -> None:
    """``p.unscale_gradients(optimizer)`` must raise mixprec.UnscalingError and leave the gradients as they are."""
    from mixprec._errors import UnscalingError

    before = _gradients(model)
    try:
        p.unscale_gradients(optimizer)  # type: ignore[attr-defined]
    except UnscalingError as exc:
        _require(
            bool(str(exc).strip()),
            f"unscale_gradients() {when} raised UnscalingError without a message: say what to do instead",
        )
    except Exception as exc:
        raise CheckFailed(
            f"unscale_gradients() {when} raised {type(exc).__name__}: {(str(exc) or ' ').splitlines()[0]}; it must"
            " raise mixprec.UnscalingError saying what to do, before asking the GradScaler (ScalerGuard's"
            " refuse_unscaling does)"
        ) from None
    else:
        raise CheckFailed(
            f"unscale_gradients() {when} raised nothing, where torch's GradScaler cannot unscale: it must raise"
            " mixprec.UnscalingError saying what to do (ScalerGuard's refuse_unscaling does)"
        )
    after = _gradients(model)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    _require(changed == 0, f"the refused unscale_gradients() {when} still changed {changed} gradient tensor(s)")


@check(applies=_scaler, targets=FABRIC)
def unscaling_refused_where_torch_cannot(subject: Subject, contract: Contract) -> None:
    """unscale_gradients() raises mixprec.UnscalingError, the gradients untouched, where the GradScaler cannot
    unscale: a second time before the step, and after ``scaler.step(optimizer)`` before the scale is updated."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    p.backward(_loss(model, subject), model)
    p.unscale_gradients(optimizer)
    _refused(p, optimizer, model, "a second time before the step")

    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    p.backward(_loss(model, subject), model)
    p.scaler.step(optimizer)  # type: ignore[attr-defined]  # stepped through the scaler, not the precision
    _refused(p, optimizer, model, "after scaler.step(optimizer) and before scaler.update()")
