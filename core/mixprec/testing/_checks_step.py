"""The checks of a training step: backward(), optimizer_step(), unscale_gradients() and main_params().

A step through the object is the step torch's SGD takes with the true gradients, in every
parameter group; with a GradScaler, the loss is scaled, a step with inf/NaN gradients is skipped and
the scale follows the user's options. Arguments and return values pass through to autograd and the
optimizer as Lightning's own classes pass them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mixprec._contract import Contract
from mixprec.testing._base import (
    _LR,
    FABRIC,
    CheckFailed,
    Subject,
    _changed,
    _close,
    _loss,
    _no_scaler,
    _param_groups,
    _poison,
    _require,
    _scale,
    _scaler,
    _true_gradients,
    _weights,
    _wide_parameters,
    check,
)
from mixprec.testing._contract import SCALER_OPTIONS
from mixprec.testing._rounding import require_step


def _gradients(model: torch.nn.Module) -> list[Tensor]:
    grads = [param.grad for param in model.parameters()]
    if any(grad is None for grad in grads):
        raise CheckFailed("backward() left parameters without gradients; it must compute them (tensor.backward())")
    return [grad for grad in grads if grad is not None]


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.cat([t.float().flatten() for t in tensors])))


@check(targets=FABRIC)
def step_applied(subject: Subject, contract: Contract) -> None:
    """backward() then optimizer_step() applies every step with finite gradients: the true gradients, in every
    parameter group with its own learning rate.

    Each weight must land within one unit in the last place of the parameters' dtype of the exact step
    (``w - lr * g`` in float64): rounding to nearest and stochastic rounding, with any seed, stay within it, and
    a wrong learning rate, group or scale does not (see ``mixprec.testing._rounding``).
    """
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    for step in range(3):
        before, gradients = _weights(model), _true_gradients(model, subject)
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        p.optimizer_step(optimizer)
        _stepped(
            model,
            before,
            gradients,
            f"after step {step + 1} through backward() and optimizer_step()",
            "backward must compute the gradients of the loss (scaled, with a GradScaler) and optimizer_step step once"
            " with them (unscaled), in every parameter group with its own settings",
        )


def _stepped(model: torch.nn.Module, before: list[Tensor], gradients: list[Tensor], what: str, fix: str) -> None:
    """Require ``model``'s weights to be ``before`` stepped by SGD with ``gradients`` in :func:`_param_groups`."""
    groups = _param_groups(model)
    lrs = [float(group["lr"]) for group in groups for _ in group["params"]]
    numbers = [number for number, group in enumerate(groups, 1) for _ in group["params"]]
    problem = require_step(before, _weights(model), gradients, lrs, numbers, what)
    if problem is not None:
        raise CheckFailed(f"{problem}. {fix}")


@check(targets=FABRIC)
def frozen_parameters_untouched(subject: Subject, contract: Contract) -> None:
    """backward() and optimizer_step() leave parameters that do not require grad without gradients and unchanged."""
    p = subject.make()
    model = p.convert_module(subject.model())
    first = next(model.children())
    first.requires_grad_(False)
    frozen = list(first.parameters())
    before = [param.detach().clone() for param in frozen]
    optimizer = torch.optim.SGD(_param_groups(model))
    try:
        p.backward(_loss(model, subject), model)
    except RuntimeError as exc:
        raise CheckFailed(
            f"backward() of a model with frozen parameters raised RuntimeError: {exc}. Compute the gradients with"
            " tensor.backward(), which skips parameters that do not require grad; never pass them to autograd as inputs"
        ) from None
    p.optimizer_step(optimizer)
    with_grad = sum(param.grad is not None for param in frozen)
    _require(with_grad == 0, f"backward() gave {with_grad} frozen parameter(s) a gradient; they require none")
    moved = sum(not torch.equal(param.detach(), old) for param, old in zip(frozen, before, strict=True))
    _require(
        moved == 0,
        f"optimizer_step() changed {moved} frozen parameter(s); only parameters with gradients may be stepped",
    )


@check(targets=FABRIC)
def backward_accumulates(subject: Subject, contract: Contract) -> None:
    """A second backward() adds its gradients to those already there, as tensor.backward() does."""
    p = subject.make()
    model = p.convert_module(subject.model())
    p.backward(_loss(model, subject), model)
    first = [grad.clone() for grad in _gradients(model)]
    p.backward(_loss(model, subject), model)
    _close(
        _gradients(model),
        [grad * 2 for grad in first],
        "after two backward() calls without zero_grad the gradients are not twice those of one: backward must add to"
        " the gradients already there (gradient accumulation), never reset or replace them",
    )


@check(targets=FABRIC)
def backward_passes_arguments(subject: Subject, contract: Contract) -> None:
    """backward(tensor, model, *args, **kwargs) passes them to autograd: retain_graph=True keeps the graph."""
    p = subject.make()
    model = p.convert_module(subject.model())
    loss = _loss(model, subject)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("backward(loss, model, retain_graph=True)", (), {"retain_graph": True}),
        ("backward(loss, model, None, True)", (None, True), {}),
        ("backward(loss, model)", (), {}),
    ]
    for i, (call, args, kwargs) in enumerate(calls):
        try:
            p.backward(loss, model, *args, **kwargs)
        except RuntimeError as exc:
            if i == 0:
                raise
            previous = calls[i - 1][0]
            raise CheckFailed(
                f"{call} after {previous} raised RuntimeError: {str(exc).splitlines()[0]}. The earlier call did not"
                " keep the graph: backward must pass *args and **kwargs on to tensor.backward(*args, **kwargs)"
            ) from None


@check(applies=_scaler, targets=FABRIC)
def loss_scaled(subject: Subject, contract: Contract) -> None:
    """backward() multiplies the loss by the GradScaler's scale."""
    p = subject.make()
    model = p.convert_module(subject.model())
    true = _true_gradients(model, subject)
    p.backward(_loss(model, subject), model)
    scale = _scale(p)
    ratio = _norm(_gradients(model)) / _norm(true)
    _require(
        math.isclose(ratio, scale, rel_tol=1e-3),
        f"after backward() the gradients are {ratio:g} times the true ones; the contract scales the loss, by the"
        f" GradScaler's scale {scale:g}: backward must call tensor = self.scaler.scale(tensor) first",
    )


#: What :class:`_Probe`'s step returns, so that a result passed through can be told from one made up.
_STEP_RESULT = object()


class _Probe(torch.optim.SGD):
    """torch's SGD that records the keyword arguments its step() is given and returns a result of its own."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, lr=_LR)
        self.received: dict[str, Any] | None = None

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        self.received = kwargs
        super().step(closure)
        return _STEP_RESULT


def _closure(
    p: Any, model: torch.nn.Module, subject: Subject, optimizer: torch.optim.Optimizer
) -> tuple[Callable[[], Tensor], list[Tensor]]:
    """A closure that computes the loss and runs backward through ``p``, and the list of the losses it returned."""
    calls: list[Tensor] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _loss(model, subject)
        p.backward(loss, model)
        calls.append(loss)
        return loss

    return closure, calls


@check(targets=FABRIC)
def optimizer_step_returns_step_result(subject: Subject, contract: Contract) -> None:
    """optimizer_step() returns what optimizer.step returns: the closure's loss, or the step's own result.

    Without a GradScaler it is given torch's SGD and a closure (SGD's step returns the closure's loss); with one,
    which takes no closure, an SGD whose step returns a value of its own.
    """
    p = subject.make()
    model = p.convert_module(subject.model())
    if contract.loss_scaling:
        probe = _Probe(model.parameters())
        p.backward(_loss(model, subject), model)
        result = p.optimizer_step(probe)
        expected, what = _STEP_RESULT, "the value optimizer.step() returned"
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
        closure, calls = _closure(p, model, subject, optimizer)
        result = p.optimizer_step(optimizer, closure=closure)
        expected = calls[-1] if calls else None
        what = "the closure's loss, which optimizer.step(closure=...) returned"
    _require(
        expected is not None and result is expected,
        f"optimizer_step() returned {result!r}, not {what}: return the result of optimizer.step(**kwargs)"
        " (with a GradScaler, of self.scaler.step(optimizer, **kwargs), which passes it on)",
    )


@check(targets=FABRIC)
def optimizer_step_passes_arguments(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, **kwargs) passes kwargs to optimizer.step."""
    p = subject.make()
    model = p.convert_module(subject.model())
    probe = _Probe(model.parameters())
    p.backward(_loss(model, subject), model)
    token = object()
    p.optimizer_step(probe, token=token)
    _require(
        probe.received == {"token": token},
        f"optimizer_step(optimizer, token=...) called optimizer.step with {probe.received!r}: pass **kwargs on"
        " (optimizer.step(**kwargs), or self.scaler.step(optimizer, **kwargs))",
    )


@check(applies=_no_scaler, targets=FABRIC)
def optimizer_step_runs_closure_once(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, closure=c) runs the closure exactly once for a one-evaluation optimizer (SGD)."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    closure, calls = _closure(p, model, subject, optimizer)
    p.optimizer_step(optimizer, closure=closure)
    _require(
        len(calls) == 1,
        f"optimizer_step(SGD, closure=...) ran the closure {len(calls)} times; SGD evaluates it once: pass it to"
        " optimizer.step(closure=closure) and do not call it yourself as well (or call it once and step without it)",
    )


@check(applies=_scaler, targets=FABRIC)
def nonfinite_step_skipped(subject: Subject, contract: Contract) -> None:
    """optimizer_step() skips a step whose gradients hold inf or NaN: weights and optimizer state untouched."""
    for bad in (math.inf, math.nan):
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        p.backward(_loss(model, subject), model)
        _poison(model, bad)
        before = _weights(model)
        p.optimizer_step(optimizer)
        changed = _changed(before, model)
        fix = "step through self.scaler.step(optimizer), which skips it, then self.scaler.update()"
        _require(changed == 0, f"a step with a {bad} gradient changed {changed} parameter tensors; {fix}")
        _require(not optimizer.state, f"a step with a {bad} gradient updated the optimizer's state; {fix}")


_OPTIONS = {"init_scale": 256.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 3}


@check(applies=_scaler)
def scaler_options_applied(subject: Subject, contract: Contract) -> None:
    """Every GradScaler option the user passes reaches the scaler.

    init_scale, growth_factor, backoff_factor and growth_interval, each of a value other than torch's default.
    """
    p = subject.make(**_OPTIONS)
    _scale(p)
    scaler = p.scaler  # type: ignore[attr-defined]
    got = {
        "init_scale": scaler.get_scale(),
        "growth_factor": scaler.get_growth_factor(),
        "backoff_factor": scaler.get_backoff_factor(),
        "growth_interval": scaler.get_growth_interval(),
    }
    wrong = {name: value for name, value in got.items() if value != _OPTIONS[name]}
    _require(
        not wrong,
        f"get_precision(..., **{_OPTIONS}) gave a GradScaler with {wrong}: build the scaler from request.options"
        " (mixprec.precision.make_scaler(request))",
    )


@check(applies=_scaler, targets=FABRIC)
def scale_backoff(subject: Subject, contract: Contract) -> None:
    """After a step with inf gradients, the scale is multiplied by the requested backoff_factor (0.25 here)."""
    p = subject.make(backoff_factor=0.25)
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    p.backward(_loss(model, subject), model)
    _poison(model, math.inf)
    p.optimizer_step(optimizer)
    expected = float(SCALER_OPTIONS["init_scale"]) * 0.25
    _require(
        _scale(p) == expected,
        f"with init_scale={SCALER_OPTIONS['init_scale']} and backoff_factor=0.25, the scale after a step with inf"
        f" gradients is {_scale(p):g}, not {expected:g}: call self.scaler.update() after every self.scaler.step(),"
        " with a scaler built from the user's options",
    )


@check(applies=_scaler, targets=FABRIC)
def scale_growth(subject: Subject, contract: Contract) -> None:
    """The scale grows by the requested growth_factor after growth_interval finite steps, and not before.

    Checked with growth_interval=2: growth at the default interval (2000 steps) would take that long to see.
    """
    interval, factor = 2, 4.0
    p = subject.make(growth_interval=interval, growth_factor=factor)
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    init = float(SCALER_OPTIONS["init_scale"])
    for step in range(1, interval + 1):
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        p.optimizer_step(optimizer)
        expected = init * factor if step == interval else init
        _require(
            _scale(p) == expected,
            f"with growth_interval={interval} and growth_factor={factor}, the scale after {step} finite step(s) is"
            f" {_scale(p):g}, not {expected:g}: call self.scaler.update() without arguments after every step, with"
            " a scaler built from the user's options",
        )


@check(applies=_scaler, targets=FABRIC)
def unscale_before_clipping(subject: Subject, contract: Contract) -> None:
    """unscale_gradients() before clipping gives the true gradient norm of every parameter group, and the step
    uses the clipped gradients."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    true = _true_gradients(model, subject)
    true_norm = _norm(true)
    max_norm = true_norm / 2
    start = _weights(model)
    p.backward(_loss(model, subject), model)
    p.unscale_gradients(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    _require(
        math.isclose(norm, true_norm, rel_tol=1e-4),
        f"after unscale_gradients() the gradient norm is {norm:g}, not the true norm {true_norm:g}: unscale_gradients"
        " must call self.scaler.unscale_(optimizer), which unscales every parameter group",
    )
    clipped = [grad.clone() for grad in _gradients(model)]
    p.optimizer_step(optimizer)
    _stepped(
        model,
        start,
        clipped,
        "the step after clipping did not apply the clipped, unscaled gradients",
        "after self.scaler.unscale_(), self.scaler.step() must not unscale again (one GradScaler, one unscale a step)",
    )


@check(applies=_no_scaler, targets=FABRIC)
def unscale_gradients_without_scaler(subject: Subject, contract: Contract) -> None:
    """Without a GradScaler, unscale_gradients() changes no gradient: the step applies the gradients as clipped."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    p.backward(_loss(model, subject), model)
    grads = _gradients(model)
    before = [grad.clone() for grad in grads]
    p.unscale_gradients(optimizer)
    after = [param.grad for param in model.parameters()]
    changed = sum(
        a is not b or not torch.equal(b, old) for a, b, old in zip(grads, after, before, strict=True) if b is not None
    )
    _require(
        changed == 0 and all(g is not None for g in after),
        f"unscale_gradients() changed {changed} gradient tensor(s) (or dropped some) of a precision without a"
        " GradScaler; there is nothing to unscale: leave the gradients alone (Lightning's Precision returns)",
    )
    norm = _norm(before)
    start = _weights(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), norm / 2)
    clipped = [grad.clone() for grad in _gradients(model)]
    p.optimizer_step(optimizer)
    _stepped(
        model, start, clipped, "the step after clipping did not apply the clipped gradients", "step with them as given"
    )


@check()
def main_params_cover_every_group(subject: Subject, contract: Contract) -> None:
    """main_params(optimizer) yields every parameter of every parameter group, once, in order (Fabric clips them)."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    expected = [param for group in optimizer.param_groups for param in group["params"]]
    got = list(p.main_params(optimizer))
    _require(
        len(got) == len(expected) and all(a is b for a, b in zip(got, expected, strict=True)),
        f"main_params() yielded {len(got)} tensor(s) for an optimizer whose {len(optimizer.param_groups)} groups hold"
        f" {len(expected)} parameters (or others than those): yield every parameter of every group"
        " (for group in optimizer.param_groups: yield from group['params']), which Fabric's clipping reads",
    )


@check(applies=_scaler, targets=FABRIC)
def lbfgs_rejected_with_scaler(subject: Subject, contract: Contract) -> None:
    """optimizer_step() refuses LBFGS when there is a GradScaler (it cannot step a closure), as Lightning does, before
    running the closure or stepping."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=2)
    calls: list[Tensor] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _loss(model, subject)
        p.backward(loss, model)
        calls.append(loss)
        return loss

    before = _weights(model)
    try:
        p.optimizer_step(optimizer, closure=closure)  # type: ignore[arg-type]  # LBFGS.step is untyped
    except Exception:
        pass
    else:
        raise CheckFailed(
            "optimizer_step() stepped LBFGS through a GradScaler, which cannot skip a closure's steps: raise an"
            " error for LBFGS, as Lightning's MixedPrecision does (TypeError)"
        )
    changed = _changed(before, model)
    _require(changed == 0, f"the refused LBFGS step still changed {changed} parameter tensors; refuse before stepping")
    _require(
        not calls,
        f"the refused LBFGS step ran its closure {len(calls)} time(s) first: refuse LBFGS before running the closure",
    )


@check(applies=_no_scaler, capability="lbfgs_closure", targets=FABRIC)
def lbfgs_closure(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, closure=...) runs the closure, and LBFGS lowers the loss."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    x, y = subject.data
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        calls += 1
        optimizer.zero_grad()
        with p.forward_context():
            out = model(p.convert_input(x))
        loss = F.mse_loss(p.convert_output(out), y)
        p.backward(loss, model)
        return loss

    before = subject.evaluate(model)
    p.optimizer_step(optimizer, closure=closure)  # type: ignore[arg-type]  # LBFGS.step is untyped
    _require(calls > 0, "optimizer_step(LBFGS, closure=...) never ran the closure: pass it on to optimizer.step")
    after = subject.evaluate(model)
    _require(
        after < before,
        f"an LBFGS step through optimizer_step() took the loss from {before:g} to {after:g}; it must lower it",
    )


@check(applies=_wide_parameters, capability="fused_optimizers", targets=FABRIC)
def fused_optimizers(subject: Subject, contract: Contract) -> None:
    """A fused SGD steps like the unfused one, and skips a step with inf gradients where there is a GradScaler."""
    results = []
    for fused in (True, False):
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(model.parameters(), lr=_LR, momentum=0.9, fused=fused)
        for _ in range(2):
            optimizer.zero_grad()
            try:
                p.backward(_loss(model, subject), model)
                p.optimizer_step(optimizer)
            except Exception as exc:
                raise CheckFailed(
                    f"a step with SGD(fused={fused}) raised {type(exc).__name__}: {exc}. Step fused optimizers as any"
                    " other (self.scaler.step handles them), or declare 'fused_optimizers' in Backend.unsupported"
                ) from None
        results.append(_weights(model))
    _close(results[0], results[1], "two fused SGD steps differ from two unfused ones: step them the same way")
    if contract.loss_scaling:
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(model.parameters(), lr=_LR, momentum=0.9, fused=True)
        p.backward(_loss(model, subject), model)
        _poison(model, math.inf)
        before = _weights(model)
        p.optimizer_step(optimizer)
        changed = _changed(before, model)
        _require(
            changed == 0,
            f"a fused step with an inf gradient changed {changed} parameter tensors: step through self.scaler.step()",
        )


def _fused(subject: Subject) -> tuple[Any, torch.nn.Module, torch.optim.Optimizer, list[Tensor]]:
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR, fused=True)
    p.backward(_loss(model, subject), model)
    return p, model, optimizer, [grad.clone() for grad in _gradients(model)]


@check(applies=lambda c: _scaler(c) and _wide_parameters(c), capability="fused_optimizers", targets=FABRIC)
def fused_clipping_with_scaler_matches_unfused(subject: Subject, contract: Contract) -> None:
    """With a GradScaler, unscale_gradients() unscales a fused optimizer's gradients too: clipping sees the true
    gradients of every parameter group, and the step after it is bit for bit the unfused optimizer's.

    torch's GradScaler.step knows that the gradients were unscaled already and steps the fused optimizer with them
    as they are (Lightning refuses to unscale for it, with NotImplementedError, though nothing is wrong).
    """
    stepped = []
    for fused in (True, False):
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(_param_groups(model), fused=fused)
        true_norm = _norm(_true_gradients(model, subject))
        p.backward(_loss(model, subject), model)
        try:
            p.unscale_gradients(optimizer)
        except Exception as exc:
            raise CheckFailed(
                f"unscale_gradients(SGD(fused={fused})) raised {type(exc).__name__}: {exc}. torch's GradScaler"
                " unscales a fused optimizer's gradients as any other's, and its step() knows they were: call"
                " self.scaler.unscale_(optimizer) for every optimizer (ScalerGuard.unscale_gradients does)"
            ) from None
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), true_norm / 2))
        _require(
            math.isclose(norm, true_norm, rel_tol=1e-4),
            f"after unscale_gradients(SGD(fused={fused})) the gradient norm is {norm:g}, not the true norm"
            f" {true_norm:g}: unscale_gradients must call self.scaler.unscale_(optimizer), fused or not",
        )
        p.optimizer_step(optimizer)
        stepped.append(_weights(model))
    fused_weights, unfused_weights = stepped
    differ = sum(not torch.equal(a, b) for a, b in zip(fused_weights, unfused_weights, strict=True))
    _require(
        differ == 0,
        f"after clipping, the fused SGD step left {differ} parameter tensor(s) other than the unfused step did:"
        " unscale through self.scaler.unscale_(optimizer), never by hand, so that self.scaler.step() knows the"
        " gradients are unscaled and does not unscale them again",
    )


@check(applies=lambda c: _no_scaler(c) and _wide_parameters(c), capability="fused_optimizers", targets=FABRIC)
def fused_clipping_without_scaler(subject: Subject, contract: Contract) -> None:
    """Without a GradScaler, unscale_gradients() accepts a fused optimizer and changes no gradient: there is
    nothing to unscale, so clipping works."""
    p, model, optimizer, before = _fused(subject)
    try:
        p.unscale_gradients(optimizer)
    except Exception as exc:
        raise CheckFailed(
            f"unscale_gradients(SGD(fused=True)) raised {type(exc).__name__}: {exc}; without a GradScaler nothing is"
            " unscaled, so clipping with a fused optimizer is fine: refuse only where there is a scaler"
        ) from None
    _close(_gradients(model), before, "unscale_gradients() changed the gradients of a precision without a GradScaler")
