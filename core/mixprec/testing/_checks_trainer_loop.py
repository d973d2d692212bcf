"""The checks of the Trainer's object in the parts of a training run beyond one clean step.

The Trainer's loops use the precision plugin in more ways than one automatic step with finite
gradients: a step whose gradients overflowed (with gradient clipping configured or not), keyword
arguments passed on through ``LightningOptimizer.step``, a closure of the user's own under manual
optimization and two manual steps in a row, gradient accumulation (the closure runs alone on every
batch but the last of each window), the LR schedulers handed through ``connect``, the evaluation
loops' step contexts under ``torch.inference_mode()``, ``convert_input`` on each batch, and
``teardown`` at the end of a fit, after which ``Trainer.save_checkpoint`` still saves the plugin's
state. Each check drives the object as the Trainer does, through the harness of
:mod:`mixprec.testing._trainer_harness`, without running a loop: a defect shows up under its own
name.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from mixprec._contract import Contract
from mixprec.testing import _global_state, _torch_flags
from mixprec.testing._base import (
    TRAINER,
    CheckFailed,
    Subject,
    _close,
    _loss,
    _require,
    _scaler,
    _sgd_step,
    _true_gradients,
    _weights,
    check,
    compute_dtype,
)
from mixprec.testing._checks_convert import _leaves, _sample
from mixprec.testing._trainer_harness import Harness

__all__ = [
    "trainer_connect_keeps_optimizers_and_schedulers",
    "trainer_convert_input",
    "trainer_eval_step_contexts_without_grad",
    "trainer_gradient_accumulation",
    "trainer_hooks_leave_torch_flags",
    "trainer_manual_closure_runs",
    "trainer_skipped_batch_after_clipping_leaves_the_next_step_ready",
    "trainer_manual_clipping_sees_true_gradients",
    "trainer_manual_optimizers_each_unscaled",
    "trainer_manual_overflow_updates_scale",
    "trainer_nonfinite_step_skipped",
    "trainer_nonfinite_step_skipped_when_clipping",
    "trainer_optimizer_step_passes_arguments",
    "trainer_teardown_keeps_state",
]

#: A clipping norm well below the suite's gradients, as the Trainer's other clipping checks use.
_CLIP_NORM = 0.05


def _skipped(subject: Subject, clip: float | None) -> None:
    for bad in (math.inf, math.nan):
        harness = Harness(subject, clip=clip)
        before, scale = _weights(harness.net), harness.scale()
        with_clipping = f" with gradient_clip_val={clip}" if clip is not None else ""
        try:
            harness.automatic_step(poison=bad)
        except RuntimeError as exc:
            raise CheckFailed(
                f"a Trainer step{with_clipping} whose gradients hold {bad} raised {type(exc).__name__}: {exc}. An"
                " overflow is the GradScaler's to skip: clip with error_if_nonfinite=False (torch's default)"
            ) from None
        moved = sum(not torch.equal(a, b) for a, b in zip(before, _weights(harness.net), strict=True))
        _require(
            moved == 0,
            f"a Trainer step{with_clipping} whose gradients hold {bad} changed {moved} parameter tensor(s): step"
            " through self.scaler.step(optimizer), which skips a step with inf or NaN gradients",
        )
        _require(
            harness.scale() < scale,
            f"after a Trainer step{with_clipping} whose gradients hold {bad} the scale is {harness.scale()}, as"
            f" before ({scale}): call self.scaler.update() after self.scaler.step(optimizer); it backs the scale off",
        )


@check(applies=_scaler, targets=TRAINER)
def trainer_nonfinite_step_skipped(subject: Subject, contract: Contract) -> None:
    """A Trainer step whose gradients hold inf or NaN is skipped: the weights stay, and the scale backs off."""
    _skipped(subject, clip=None)


@check(applies=_scaler, targets=TRAINER)
def trainer_nonfinite_step_skipped_when_clipping(subject: Subject, contract: Contract) -> None:
    """With gradient_clip_val, a Trainer step whose gradients hold inf or NaN is skipped too, without an error.

    Clipping runs before the step; clipping an infinite norm must not raise (torch's clip_grad_norm_ with
    error_if_nonfinite=True would), so that the GradScaler skips the step and backs the scale off.
    """
    _skipped(subject, clip=_CLIP_NORM)


class _Probe(torch.optim.SGD):
    """torch's SGD that runs a closure it is given and records the keyword arguments of its step."""

    received: dict[str, Any] | None = None

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        self.received = kwargs
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        super().step()
        return result


@check(targets=TRAINER)
def trainer_optimizer_step_passes_arguments(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, model, closure, **kwargs) passes kwargs on to optimizer.step.

    ``LightningOptimizer.step(closure, **kwargs)`` hands them to the plugin, for optimizers whose step takes
    arguments of its own.
    """
    harness = Harness(subject)
    probe = _Probe([p for group in harness.optimizer.param_groups for p in group["params"]], lr=0.1)

    def closure() -> Tensor:
        probe.zero_grad()
        loss = _loss(harness.net, subject)
        harness.trainer.strategy.backward(loss, probe)
        return loss.detach()

    token = object()
    harness.p.optimizer_step(probe, model=harness.module, closure=closure, token=token)
    _require(
        probe.received is not None and probe.received.get("token") is token,
        f"optimizer_step(optimizer, model, closure, token=...) called optimizer.step with {probe.received!r}: pass"
        " **kwargs on (optimizer.step(closure=closure, **kwargs), or self.scaler.step(optimizer, **kwargs))",
    )


@check(targets=TRAINER)
def trainer_manual_closure_runs(subject: Subject, contract: Contract) -> None:
    """Under manual optimization, opt.step(closure=closure) runs the user's closure once and steps with its gradients.

    A closure of the user's (zero_grad, the loss, manual_backward, return the loss) is how a training_step steps an
    optimizer that needs one; it returns the loss, so nothing is skipped.
    """
    harness = Harness(subject, manual=True)
    expected = _sgd_step(harness.net, _true_gradients(harness.net, subject))
    runs: list[Tensor] = []

    def closure() -> Tensor:
        harness.optimizer.zero_grad()
        loss = _loss(harness.net, subject)
        harness.trainer.strategy.backward(loss, None)  # manual_backward
        runs.append(loss.detach())
        return runs[-1]

    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=closure)
    _require(
        len(runs) == 1,
        f"under manual optimization optimizer_step ran the user's closure {len(runs)} times; it must run it once, as"
        " under automatic optimization (closure(), or optimizer.step(closure=closure))",
    )
    _close(
        _weights(harness.net),
        expected,
        "under manual optimization the step with the user's closure did not apply the closure's true gradients:"
        " run the closure, unscale where there is a GradScaler, and step",
    )


@check(targets=TRAINER)
def trainer_manual_optimizers_each_unscaled(subject: Subject, contract: Contract) -> None:
    """Under manual optimization with two optimizers, each opt.step() unscales and steps the optimizer it is given:
    on_before_optimizer_step sees its parameters' true gradients, and its step applies them.

    Lightning steps several optimizers only under manual optimization, one after the other after one backward.
    """
    harness = Harness(subject, manual=True)
    params = list(harness.net.parameters())
    true = _true_gradients(harness.net, subject)
    expected = _sgd_step(harness.net, true)
    first = torch.optim.SGD([harness.optimizer.param_groups[0]])
    second = torch.optim.SGD([harness.optimizer.param_groups[1]])
    harness.trainer.strategy.optimizers = [first, second]
    harness.backward(None)  # manual_backward: no optimizer
    for index, optimizer in enumerate((first, second)):
        owned = [i for i, p in enumerate(params) if any(p is q for q in optimizer.param_groups[0]["params"])]
        harness.p.optimizer_step(optimizer, model=harness.module, closure=lambda: None)
        seen = harness.module.gradients["on_before_optimizer_step"]
        _close(
            [seen[i] for i in owned],
            [true[i] for i in owned],
            f"under manual optimization with two optimizers on_before_optimizer_step of optimizer {index} saw"
            " gradients of its parameters that are not the true ones: unscale the optimizer optimizer_step is"
            " given (self.scaler.unscale_(optimizer)), not another one",
        )
    _close(
        _weights(harness.net),
        expected,
        "under manual optimization with two optimizers the steps did not apply the true gradients, each to its own"
        " parameters: unscale and step the optimizer optimizer_step is given",
    )


@check(applies=_scaler, targets=TRAINER)
def trainer_manual_overflow_updates_scale(subject: Subject, contract: Contract) -> None:
    """Under manual optimization an overflowing step is skipped and the scale backs off, and the next step trains.

    Each manual opt.step() goes through optimizer_step: with a GradScaler it steps and updates the scale, whatever
    the optimization mode, so the next step can unscale again.
    """
    harness = Harness(subject, manual=True)
    scale = harness.scale()
    harness.backward(None)
    next(harness.net.parameters()).grad.view(-1)[0] = math.inf  # type: ignore[union-attr]
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: None)
    _require(
        harness.scale() < scale,
        f"under manual optimization a step with an inf gradient left the scale at {harness.scale()} (it was {scale}):"
        " call self.scaler.update() after every self.scaler.step(optimizer), under manual optimization too",
    )
    expected = _sgd_step(harness.net, _true_gradients(harness.net, subject))
    harness.optimizer.zero_grad()
    harness.backward(None)
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: None)
    _close(
        _weights(harness.net),
        expected,
        "under manual optimization the step after a skipped one did not apply the true gradients",
    )


#: A clipping value below the largest of the suite's true gradients and far below the scaled ones.
_CLIP_VALUE = 0.05


@check(targets=TRAINER)
def trainer_manual_clipping_sees_true_gradients(subject: Subject, contract: Contract) -> None:
    """Under manual optimization, self.clip_gradients(opt, ...) between manual_backward and opt.step() clips the true
    gradients, and the step applies them clipped, step after step, running the user's closure and the hooks.

    Lightning's manual-optimization recipe clips in ``training_step`` (``LightningModule.clip_gradients`` with the
    ``LightningOptimizer``): with a GradScaler the gradients are still scaled there, so the object unscales them
    first, and its ``optimizer_step`` then steps without unscaling them again, runs the closure it is given and
    ``on_before_optimizer_step``, and updates the scale, so that the next step clips and steps the same way.
    """
    from lightning.pytorch.core.optimizer import LightningOptimizer

    harness = Harness(subject, manual=True, algorithm="value")
    for step in (1, 2):
        true = _true_gradients(harness.net, subject)
        _require(
            max(float(g.abs().max()) for g in true) > _CLIP_VALUE,
            f"the suite's true gradients stay within {_CLIP_VALUE}, so clipping them by value changes nothing",
        )
        expected = _sgd_step(harness.net, [g.clamp(-_CLIP_VALUE, _CLIP_VALUE) for g in true])
        harness.optimizer.zero_grad()
        harness.backward(None)
        harness.module.clip_gradients(
            LightningOptimizer(harness.optimizer), gradient_clip_val=_CLIP_VALUE, gradient_clip_algorithm="value"
        )
        ran: list[int] = []
        harness.module.events.clear()
        harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=functools.partial(ran.append, step))
        _close(
            _weights(harness.net),
            expected,
            f"under manual optimization, step {step}: clipping by value to {_CLIP_VALUE} between manual_backward and"
            " opt.step() and then stepping did not apply the true gradients clipped: with a GradScaler, unscale them"
            " in clip_gradients before clipping (the optimizer may come as a LightningOptimizer: unscale the"
            " optimizer it wraps), step without unscaling them again, and update the scale after the step",
        )
        _require(
            ran == [step],
            f"under manual optimization, after clip_gradients, opt.step(closure=...) ran the user's closure"
            f" {len(ran)} time(s), not once: run the closure it is given before stepping",
        )
        _require(
            "on_before_optimizer_step" in harness.module.events,
            "under manual optimization, after clip_gradients, opt.step() did not call on_before_optimizer_step: call"
            " the hooks of _after_closure(model, optimizer) before the step, as every other step does",
        )


@check(applies=_scaler, targets=TRAINER)
def trainer_skipped_batch_after_clipping_leaves_the_next_step_ready(subject: Subject, contract: Contract) -> None:
    """With gradient_clip_val, a step skipped because training_step returned None, with gradients accumulated before
    it (clipped, not stepped), leaves the GradScaler ready: the next batch unscales, clips and steps as usual.

    Lightning clips in ``_after_closure`` even when the closure returned None; an object that unscales while
    clipping must forget that unscaling when no step follows, or the next step's unscaling raises.
    """
    harness = Harness(subject, clip=_CLIP_VALUE, algorithm="value")
    harness.automatic_step()
    # The last batch of a gradient-accumulation window returns None: the earlier batch's gradients are there, the
    # loop's closure returns None, and Lightning still clips them before it skips the step.
    harness.optimizer.zero_grad()
    harness.backward(harness.optimizer)
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: None)
    true = _true_gradients(harness.net, subject)
    expected = _sgd_step(harness.net, [g.clamp(-_CLIP_VALUE, _CLIP_VALUE) for g in true])
    try:
        harness.automatic_step()
    except RuntimeError as exc:
        raise CheckFailed(
            f"the step after a skipped batch (training_step returned None, gradient_clip_val set) raised"
            f" {type(exc).__name__}: {str(exc).splitlines()[0]}. When no step follows clipping's unscaling, forget it"
            " (the GradScaler's per-optimizer state), so that the next step unscales its own gradients"
        ) from None
    _close(
        _weights(harness.net),
        expected,
        "the step after a skipped batch did not apply the true gradients clipped by value",
    )


@check(targets=TRAINER)
def trainer_gradient_accumulation(subject: Subject, contract: Contract) -> None:
    """With accumulate_grad_batches=2 the step applies the gradients of both batches of the window.

    The Trainer runs the closure alone on the first batch (its loss divided by 2, its gradients kept), then
    optimizer_step with the closure of the second, which does not zero them: the step applies the mean of the
    two batches' gradients, here the same batch twice, so the true gradients.
    """
    harness = Harness(subject)
    harness.trainer.accumulate_grad_batches = 2
    expected = _sgd_step(harness.net, _true_gradients(harness.net, subject))

    def closure(first: bool) -> Tensor:
        if first:
            harness.optimizer.zero_grad()  # the loop zeroes on the first batch of each window only
        loss = _loss(harness.net, subject) / 2  # the loop divides the loss by accumulate_grad_batches
        harness.trainer.strategy.backward(loss, harness.optimizer)
        return loss.detach()

    closure(first=True)
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: closure(first=False))
    _close(
        _weights(harness.net),
        expected,
        "with accumulate_grad_batches=2 the step did not apply the mean of the two batches' gradients: keep the"
        " gradients the closures accumulated (no zero_grad in optimizer_step) and leave the loss as the loop gives"
        " it (the loop divides it by accumulate_grad_batches already)",
    )


@check(targets=TRAINER)
def trainer_connect_keeps_optimizers_and_schedulers(subject: Subject, contract: Contract) -> None:
    """connect(model, optimizers, lr_schedulers) returns the optimizers and every LR scheduler it was given.

    The strategy replaces its own with what connect returns: a scheduler it drops never steps.
    """
    from lightning.pytorch.utilities.types import LRSchedulerConfig

    harness = Harness(subject)
    config = LRSchedulerConfig(torch.optim.lr_scheduler.StepLR(harness.optimizer, step_size=1))
    _, optimizers, schedulers = harness.p.connect(harness.module, [harness.optimizer], [config])
    _require(
        list(schedulers) == [config] and schedulers[0] is config,
        f"connect(model, optimizers, [config]) returned the LR schedulers {schedulers!r}: return the ones it was"
        " given (the strategy replaces its own with them, and a scheduler dropped here never steps)",
    )
    _require(
        len(optimizers) == 1,
        f"connect(model, [optimizer], ...) returned {len(optimizers)} optimizers: return one for each it was given",
    )


@check(targets=TRAINER)
def trainer_hooks_leave_torch_flags(subject: Subject, contract: Contract) -> None:
    """A run's worth of the Trainer's calls (convert_module, connect, a step in each step context, teardown) leaves
    torch's process-wide switches and global state as they were.

    The float32 matmul precision, cuDNN's benchmark mode and the others change every later computation in the
    process, a second Trainer's included.
    """
    device_type = subject.device.type
    before = _torch_flags.snapshot(), _global_state.snapshot(device_type)
    harness = Harness(subject)
    harness.p.connect(harness.module, [harness.optimizer], [])
    with harness.p.train_step_context():
        harness.automatic_step()
    for name in ("val_step_context", "test_step_context", "predict_step_context"):
        with getattr(harness.p, name)():
            pass
    harness.p.teardown()
    leaked = "; ".join(
        change
        for change in (
            _global_state.changes(before[0], _torch_flags.snapshot()),
            _global_state.changes(before[1], _global_state.snapshot(device_type)),
        )
        if change
    )
    _require(
        not leaked,
        f"after convert_module, connect, a step in train_step_context, the other step contexts and teardown():"
        f" {leaked}. These are the whole process's: change one only inside a context and put it back on exit,"
        " never in connect or convert_module",
    )


@check(targets=TRAINER)
def trainer_teardown_keeps_state(subject: Subject, contract: Contract) -> None:
    """teardown() keeps state_dict(): a checkpoint saved after Trainer.fit (trainer.save_checkpoint) holds the scale
    and the counters the run reached."""
    harness = Harness(subject)
    harness.automatic_step(poison=math.inf if contract.loss_scaling else None)
    harness.automatic_step()
    state = harness.p.state_dict()
    harness.p.teardown()
    after = harness.p.state_dict()
    _require(
        after == state,
        f"after teardown() state_dict() is {after!r}, not {state!r}: the Trainer calls teardown at the end of fit and"
        " saves the plugin's state_dict() in every checkpoint saved after it; release resources there, keep the state",
    )


def _precision_state(device_type: str) -> tuple[bool, torch.dtype, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type), torch.get_default_dtype()


@check(targets=TRAINER)
def trainer_eval_step_contexts_without_grad(subject: Subject, contract: Contract) -> None:
    """val_step_context, test_step_context and predict_step_context set under torch.inference_mode() what
    train_step_context sets with grad enabled: the evaluation loops run their steps without grad."""
    p: Any = subject.make()
    device_type = subject.device.type
    with torch.enable_grad(), p.train_step_context():
        expected = _precision_state(device_type)
    for name in ("val_step_context", "test_step_context", "predict_step_context"):
        with torch.inference_mode(), getattr(p, name)():
            got = _precision_state(device_type)
        _require(
            got == expected,
            f"inside {name}() under torch.inference_mode() autocast, its dtype and the default dtype are {got}; inside"
            f" train_step_context() they are {expected}: the evaluation loops run without grad, and must compute as"
            " training does (do not make autocast depend on torch.is_grad_enabled())",
        )


@check(targets=TRAINER)
def trainer_convert_input(subject: Subject, contract: Contract) -> None:
    """The Trainer's convert_input (every batch, in every loop) keeps the batch's structure, its integer and bool
    tensors and its other values; floating tensors become the contract's compute dtype, or under autocast may stay
    as they are (Lightning's MixedPrecision leaves them)."""
    p = subject.make()
    data = _sample(subject.torch_device, torch.float32)
    dtype = compute_dtype(contract)
    for path, before, after in _leaves(data, p.convert_input(data)):
        if not isinstance(before, Tensor):
            _require(after == before, f"convert_input turned {path} from {before!r} into {after!r}; other values stay")
        elif not torch.is_floating_point(before):
            _require(
                isinstance(after, Tensor) and after.dtype == before.dtype and torch.equal(after, before),
                f"convert_input turned {path} ({before.dtype}) into {getattr(after, 'dtype', after)!r}: integer and"
                " bool tensors (labels, indices, masks) stay as they are; cast only floating tensors"
                " (torch.is_floating_point)",
            )
        else:
            allowed = {dtype, before.dtype} if contract.autocast else {dtype if contract.converts_io else before.dtype}
            _require(
                isinstance(after, Tensor) and after.dtype in allowed,
                f"convert_input turned {path} ({before.dtype}) into {getattr(after, 'dtype', after)!r}; the contract"
                f" wants one of {sorted(str(d) for d in allowed)}",
            )
