"""The checks of the Trainer's object (``target="trainer"``): the hooks of Lightning's ``pytorch`` ``Precision``.

The Trainer drives its precision plugin differently from Fabric: its strategy's ``backward`` calls
``pre_backward`` (which scales the loss and calls the LightningModule's ``on_before_backward``),
``backward`` and ``post_backward`` (``on_after_backward``); ``optimizer_step(optimizer, model,
closure)`` runs the closure (training_step and backward) once, then ``on_before_optimizer_step`` and
the gradient clipping the Trainer is configured with (``configure_gradient_clipping`` ->
``clip_gradients``, by norm or by value, over every parameter group), then the step; a closure whose
``training_step`` returned None skips the step, and under manual optimization the closure returns
None and the step is taken. The Trainer files the plugin's ``state_dict()`` in a checkpoint under
its class's ``__qualname__``, gives the whole checkpoint to ``on_load_checkpoint`` and restores the
state from that key; its step contexts (``train_step_context`` and the others) are
``forward_context()``.

Most checks here drive the object as the Trainer's loops do, through a Trainer built around it with
a small LightningModule attached, without running a loop: a defect then shows up under its own
name. ``trainer_fit`` and ``trainer_resume_restores_scaler_state`` run a real ``Trainer.fit`` (two
steps) and a resume through ``ckpt_path``, once per subject.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from mixprec._contract import Contract
from mixprec._telemetry import STATE_ENTRY, holds_scaler_state
from mixprec.testing._base import (
    _LR,
    TRAINER,
    CheckFailed,
    CheckSkipped,
    Subject,
    _autocast,
    _close,
    _require,
    _scaler,
    _sgd_step,
    _true_gradients,
    _weights,
    _wide_parameters,
    check,
    quiet_trainer,
    trainer_placement,
)
from mixprec.testing._trainer_harness import Harness, gradients

#: Clipping thresholds well below the suite's gradients (norm about 0.5, largest entry about 0.3), so that
#: clipping changes every step it applies to.
_CLIP_NORM = 0.05
_CLIP_VALUE = 0.01

#: Lightning's own class names for precision plugins with a GradScaler: the keys the Trainer files its
#: state under, so that checkpoints move between Lightning's plugin and a backend's.
_SCALER_KEYS = ("MixedPrecision", "FSDPPrecision")


def _clipped_by_norm(gradients: list[Tensor], max_norm: float) -> list[Tensor]:
    """``gradients`` scaled as torch's clip_grad_norm_ scales them: to ``max_norm`` over all of them, if above it."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in gradients]))
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [(g.float() * coefficient).to(g.dtype) for g in gradients]


# --- backward ---------------------------------------------------------------------------------------


@check(targets=TRAINER)
def trainer_backward_hooks(subject: Subject, contract: Contract) -> None:
    """The Trainer's backward calls the LightningModule's on_before_backward, then on_after_backward, once each.

    pre_backward calls on_before_backward (and the callbacks'), post_backward on_after_backward, as Lightning's
    Precision does; a backend that overrides them must call super().
    """
    harness = Harness(subject)
    harness.backward(harness.optimizer)
    events = [e for e in harness.module.events if e.startswith("on_")]
    _require(
        events == ["on_before_backward", "on_after_backward"],
        f"the Trainer's backward (strategy.backward: pre_backward, backward, post_backward) called the"
        f" LightningModule's hooks {events}; it must call on_before_backward then on_after_backward, once each:"
        " an override of pre_backward or post_backward must call super() (lightning.pytorch's Precision calls them)",
    )


@check(targets=TRAINER)
def trainer_backward_gradients(subject: Subject, contract: Contract) -> None:
    """The Trainer's backward leaves the loss's gradients, multiplied by the GradScaler's scale where there is one."""
    harness = Harness(subject)
    expected = _true_gradients(harness.net, harness.subject)
    scale = harness.scale()
    harness.backward(harness.optimizer)
    what = "scaled by the GradScaler's scale" if contract.loss_scaling else "of the loss"
    _close(
        gradients(harness.net),
        [g * scale for g in expected],
        f"after the Trainer's backward the gradients are not those {what}: pre_backward must scale the loss"
        " (scaler.scale) where there is a GradScaler, and backward compute its gradients (model.backward)",
    )


# --- optimizer_step -----------------------------------------------------------------------------------


@check(targets=TRAINER)
def trainer_closure_runs_once(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, model, closure) runs the closure (training_step and backward) exactly once."""
    harness = Harness(subject)
    harness.automatic_step()
    _require(
        harness.closures == 1,
        f"optimizer_step ran the closure {harness.closures} times; the Trainer's closure runs training_step and"
        " backward, and must run once per step: call it once (or pass it to optimizer.step, which calls it once)",
    )


@check(targets=TRAINER)
def trainer_step_applied(subject: Subject, contract: Contract) -> None:
    """optimizer_step steps once with the true (unscaled) gradients, in every parameter group with its settings."""
    harness = Harness(subject)
    expected = _sgd_step(harness.net, _true_gradients(harness.net, subject))
    harness.automatic_step()
    _close(
        _weights(harness.net),
        expected,
        "after one optimizer_step with the Trainer's closure the weights are not those of torch's SGD step with the"
        " true gradients in both parameter groups: run the closure, unscale the gradients (scaler.unscale_) where"
        " there is a GradScaler, and step once (scaler.step, then scaler.update)",
    )


@check(targets=TRAINER)
def trainer_skips_step_without_loss(subject: Subject, contract: Contract) -> None:
    """A closure whose training_step returned None takes no step: the weights and the scale stay as they are."""
    harness = Harness(subject, skip=True)
    before, scale = _weights(harness.net), harness.scale()
    harness.automatic_step()
    moved = sum(not torch.equal(a, b) for a, b in zip(before, _weights(harness.net), strict=True))
    _require(
        moved == 0 and harness.scale() == scale,
        f"training_step returned None (the Trainer's way to skip a batch), yet optimizer_step changed {moved}"
        f" parameter tensor(s) and the scale from {scale} to {harness.scale()}: when the closure returns None under"
        " automatic optimization, return without unscaling, stepping or updating the scaler",
    )


@check(targets=TRAINER)
def trainer_manual_optimization_steps(subject: Subject, contract: Contract) -> None:
    """Under manual optimization (the closure returns None) optimizer_step steps with the true gradients."""
    harness = Harness(subject, manual=True)
    expected = _sgd_step(harness.net, _true_gradients(harness.net, subject))
    harness.backward(None)  # manual_backward: no optimizer
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: None)
    _close(
        _weights(harness.net),
        expected,
        "under manual optimization (automatic_optimization=False; opt.step() passes a closure that returns None)"
        " optimizer_step did not step with the true gradients: a None closure result skips the step only under"
        " automatic optimization (model.automatic_optimization)",
    )


@check(targets=TRAINER)
def trainer_clips_after_closure(subject: Subject, contract: Contract) -> None:
    """With gradient_clip_val, the Trainer clips after the closure and before the step, the true gradients, by norm.

    The closure (training_step and backward) runs, then configure_gradient_clipping, then the step, which applies
    the true gradients clipped to the norm over every parameter group.
    """
    harness = Harness(subject, clip=_CLIP_NORM)
    true = _true_gradients(harness.net, subject)
    harness.automatic_step()
    order = [e for e in harness.module.events if e in ("closure", "configure_gradient_clipping", "step")]
    _require(
        order == ["closure", "configure_gradient_clipping", "step"],
        f"with gradient_clip_val the Trainer's step ran {order}; it must run the closure, then clip"
        " (configure_gradient_clipping), then step: after the closure call self._after_closure(model, optimizer),"
        " as Lightning's Precision does, which calls on_before_optimizer_step and clips",
    )
    _close(
        harness.module.gradients["step"],
        _clipped_by_norm(true, _CLIP_NORM),
        f"the step applied gradients that are not the true gradients clipped to norm {_CLIP_NORM} over every"
        " parameter group: unscale before clipping (scaler.unscale_) and clip every group (main_params)",
    )


def _clip_gradients(
    subject: Subject, algorithm: str, limit: float, expected: Callable[[list[Tensor]], list[Tensor]]
) -> None:
    from lightning.pytorch.utilities import GradClipAlgorithmType

    harness = Harness(subject)
    true = _true_gradients(harness.net, subject)
    for param, grad in zip(harness.net.parameters(), true, strict=True):
        param.grad = grad.clone()
    harness.p.clip_gradients(harness.optimizer, limit, GradClipAlgorithmType(algorithm))
    _close(
        gradients(harness.net),
        expected(true),
        f"clip_gradients(optimizer, {limit}, {algorithm!r}) did not clip the gradients of both parameter groups as"
        f" torch's clip_grad_{algorithm}_ over all of them does: clip by {algorithm} when asked, every parameter"
        " of main_params(optimizer)",
    )


@check(targets=TRAINER)
def trainer_clip_gradients_by_norm(subject: Subject, contract: Contract) -> None:
    """clip_gradients(optimizer, clip_val, "norm") clips the gradients of every parameter group to that total norm."""
    _clip_gradients(subject, "norm", _CLIP_NORM, lambda true: _clipped_by_norm(true, _CLIP_NORM))


@check(targets=TRAINER)
def trainer_clip_gradients_by_value(subject: Subject, contract: Contract) -> None:
    """clip_gradients(optimizer, clip_val, "value") clamps the gradients of every parameter group to ±clip_val.

    The Trainer calls it so for gradient_clip_algorithm="value".
    """
    _clip_gradients(subject, "value", _CLIP_VALUE, lambda true: [g.clamp(-_CLIP_VALUE, _CLIP_VALUE) for g in true])


# --- the step contexts ------------------------------------------------------------------------------


def _step_contexts(p: Any) -> dict[str, Callable[[], AbstractContextManager[Any]]]:
    return {name: getattr(p, name) for name in ("train_step_context", "val_step_context", "test_step_context")}


@check(applies=_autocast, targets=TRAINER)
def trainer_step_contexts_see_updated_weights(subject: Subject, contract: Contract) -> None:
    """Inside a Trainer step context, a forward after an in-place weight update sees the new weights.

    Under manual optimization a training_step steps the optimizer inside train_step_context; autocast's cache
    would keep the old weights' casts until the context ends. Lightning's Trainer classes autocast with
    cache_enabled=False.
    """
    p = subject.make()
    model = p.convert_module(subject.model())
    x, _ = subject.data
    for name, context in _step_contexts(p).items():
        fresh = copy.deepcopy(model)
        with context():
            model(x)
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(1.0)
            got = model(x)
        with torch.no_grad():
            for param in fresh.parameters():
                param.add_(1.0)
        with context():
            expected = fresh(x)
        _require(
            torch.equal(got, expected),
            f"inside {name}() a forward after an in-place update of the weights computed with the old weights:"
            " autocast's cache kept their casts. The Trainer's contexts autocast with cache_enabled=False"
            " (torch.autocast(device, dtype, cache_enabled=False)), because a training_step may step inside one",
        )


# --- a real fit, its checkpoint and a resume -----------------------------------------------------------


class _Fit:
    """A real Trainer.fit of two steps, saved, and resumed through ckpt_path with a new object: what the checks read."""

    def __init__(self, subject: Subject, contract: Contract) -> None:
        from lightning.pytorch.accelerators import AcceleratorRegistry

        if subject.device.type not in AcceleratorRegistry:
            raise CheckSkipped(f"the Lightning Trainer has no accelerator named {subject.device.type!r}")
        self.p = subject.make()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "fit.ckpt"
            self.losses, self.trainer = _fit(subject, contract, self.p, max_steps=2, poison=contract.loss_scaling)
            with quiet_trainer():
                self.trainer.save_checkpoint(path, weights_only=False)
            self.checkpoint: dict[str, Any] = torch.load(path, weights_only=False)
            self.resumed = subject.make()
            self.restored: dict[str, Any] = {}
            _fit(subject, contract, self.resumed, max_steps=3, ckpt_path=path, restored=self.restored)


def _fit(
    subject: Subject,
    contract: Contract,
    p: Any,
    *,
    max_steps: int,
    poison: bool = False,
    ckpt_path: Path | None = None,
    restored: dict[str, Any] | None = None,
) -> tuple[list[float], Any]:
    """Trainer.fit of the suite's model with ``p``; with ``poison`` the first step's loss is inf (scale backs off)."""
    from lightning.pytorch import LightningModule, Trainer

    x, y = subject.data
    losses: list[float] = []

    class Module(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = subject.model()

        def forward(self, inputs: Tensor) -> Tensor:
            out: Tensor = self.net(inputs)
            return out

        def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
            inputs, targets = batch
            loss = F.mse_loss(self(inputs).float(), targets)
            losses.append(float(loss.detach()))
            return loss * math.inf if poison and self.global_step == 0 else loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=_LR)

        def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
            return DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=len(x))

        def on_train_start(self) -> None:
            if restored is not None:
                restored.update(p.state_dict())

    device = subject.device
    with quiet_trainer():
        trainer = Trainer(
            **trainer_placement(device),
            plugins=[p],
            max_steps=max_steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        try:
            trainer.fit(Module(), ckpt_path=ckpt_path, weights_only=False)
        except Exception as exc:
            what = "resuming through ckpt_path" if ckpt_path is not None else "Trainer.fit"
            raise CheckFailed(
                f"{what} raised {type(exc).__name__}: {(str(exc) or ' ').splitlines()[0]}. The Trainer takes the"
                " object as it is: the checks of the Trainer's hooks say which one is wrong"
            ) from None
    return losses, trainer


def _fitted(subject: Subject, contract: Contract) -> _Fit:
    """The subject's one fit, shared by the checks that read it; an error in it is each one's failure."""
    found = subject.shared.get("trainer_fit")
    if found is None:
        try:
            found = _Fit(subject, contract)
        except (CheckFailed, CheckSkipped) as exc:
            found = exc
        subject.shared["trainer_fit"] = found
    if isinstance(found, Exception):
        raise found
    return found


@check(targets=TRAINER)
def trainer_fit(subject: Subject, contract: Contract) -> None:
    """Trainer(plugins=[p]).fit trains with the object: two steps lower the loss."""
    fit = _fitted(subject, contract)
    finite = [loss for loss in fit.losses if math.isfinite(loss)]
    _require(
        fit.trainer.strategy.precision_plugin is fit.p,
        "the Trainer does not use the object it was given: it must be a lightning.pytorch.plugins.precision.Precision",
    )
    _require(
        len(finite) >= 1 and (contract.loss_scaling or finite[-1] < finite[0]),
        f"Trainer.fit of two steps saw the losses {fit.losses}; its steps must lower the loss",
    )


@check(targets=TRAINER)
def trainer_checkpoint_key(subject: Subject, contract: Contract) -> None:
    """A Trainer checkpoint holds the object's state_dict() under the key of Lightning's own plugin.

    The Trainer files a plugin's non-empty state under its class's __qualname__: with a GradScaler that must be
    the name of Lightning's class ("MixedPrecision", or "FSDPPrecision"), so that the scale is restored whichever
    of the two plugins resumes.
    """
    fit = _fitted(subject, contract)
    key = type(fit.p).__qualname__
    state = fit.p.state_dict()
    if not contract.loss_scaling:
        _require(
            not holds_scaler_state(state),
            f"state_dict() after Trainer.fit is {state!r}; the contract scales no loss: it holds no GradScaler state"
            f" (nothing beside mixprec's {STATE_ENTRY!r} entry)",
        )
        return
    _require(
        key in _SCALER_KEYS,
        f"the Trainer files the GradScaler state under the class's __qualname__, {key!r}, which Lightning's own"
        f" plugin does not read: keep Lightning's class name (one of {_SCALER_KEYS}) for the Trainer's class",
    )
    _require(
        fit.checkpoint.get(key) == state,
        f"the checkpoint holds {fit.checkpoint.get(key)!r} under {key!r}; the object's state_dict() is {state!r}:"
        " leave checkpointing to the Trainer (state_dict(), filed under the class's __qualname__)",
    )


@check(applies=_scaler, targets=TRAINER)
def trainer_resume_restores_scaler_state(subject: Subject, contract: Contract) -> None:
    """Trainer.fit(ckpt_path=...) with a new object restores the GradScaler state saved (on_load_checkpoint too)."""
    fit = _fitted(subject, contract)
    saved = fit.p.state_dict()
    _require(
        fit.restored == saved,
        f"resuming through ckpt_path restored the state {fit.restored!r}; the checkpoint saved {saved!r}: the"
        " Trainer restores it through on_load_checkpoint(checkpoint) and load_state_dict() of the entry under the"
        " class's __qualname__; neither may drop it",
    )


# --- the hooks around backward and the step, what the hooks return -----------------------------------------

#: The hooks one automatic step calls, in order, callbacks' before the LightningModule's, as Lightning's Precision does.
_STEP_HOOKS = [
    "callback.on_before_backward",
    "on_before_backward",
    "callback.on_after_backward",
    "on_after_backward",
    "closure",
    "callback.on_before_optimizer_step",
    "on_before_optimizer_step",
    "configure_gradient_clipping",
    "step",
]


@check(targets=TRAINER)
def trainer_step_hooks(subject: Subject, contract: Contract) -> None:
    """One automatic step calls the callbacks' and the LightningModule's hooks around backward and the step, in order.

    on_before_backward and on_after_backward (callbacks first) in the closure, then on_before_optimizer_step (callbacks
    first), which sees the true (unscaled) gradients, then configure_gradient_clipping, then the step.
    """
    harness = Harness(subject)
    true = _true_gradients(harness.net, subject)
    harness.automatic_step()
    _require(
        harness.module.events == _STEP_HOOKS,
        f"one automatic step of the Trainer called {harness.module.events}; it must call {_STEP_HOOKS}: pre_backward,"
        " post_backward and _after_closure call each hook of the callbacks (call._call_callback_hooks) and then of the"
        " LightningModule, as Lightning's Precision does: an override must call super()",
    )
    _close(
        harness.module.gradients["on_before_optimizer_step"],
        true,
        "on_before_optimizer_step saw gradients that are not the true ones: unscale them (scaler.unscale_) right"
        " after the closure, before the hook, where there is a GradScaler",
    )


@check(targets=TRAINER)
def trainer_hooks_return_the_loss(subject: Subject, contract: Contract) -> None:
    """The strategy's backward returns the loss backward ran on, detached; optimizer_step returns the step's output.

    post_backward returns the (scaled) loss detached, which the Trainer's loop keeps; the closure the optimizer is
    given returns the Trainer's closure's loss (LBFGS and other closure optimizers read it), and optimizer_step
    returns what the optimizer's step returned.
    """
    harness = Harness(subject)
    loss, returned = harness.backward(harness.optimizer)
    _require(
        isinstance(returned, Tensor) and not returned.requires_grad,
        f"the strategy's backward returned {returned!r}: post_backward must return the loss, detached",
    )
    _close(
        returned.float(),
        (loss * harness.scale()).detach().float(),
        "the strategy's backward returned another value than the loss backward ran on (scaled where there is a"
        " GradScaler): pre_backward returns the loss to differentiate, post_backward returns it detached",
    )
    harness.optimizer.zero_grad()
    out = harness.automatic_step()
    given = harness.optimizer.closure_results
    _require(
        all(result is harness.losses[-1] for result in given),
        f"the closure optimizer.step was given returned {given!r}, not the Trainer's closure's loss: pass the closure's"
        " result on (Lightning's _wrap_closure returns it)",
    )
    _require(
        out is harness.optimizer.returned,
        f"optimizer_step returned {out!r}, not what the optimizer's step returned ({harness.optimizer.returned!r}):"
        " return the step's output (optimizer.step(...), or scaler.step(optimizer))",
    )


@check(targets=TRAINER)
def trainer_manual_optimization_not_clipped(subject: Subject, contract: Contract) -> None:
    """Under manual optimization optimizer_step neither clips nor calls configure_gradient_clipping.

    The Trainer clips in optimizer_step only under automatic optimization; under manual optimization the user clips.
    """
    harness = Harness(subject, manual=True, clip=_CLIP_NORM)
    true = _true_gradients(harness.net, subject)
    harness.backward(None)
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: None)
    _require(
        "configure_gradient_clipping" not in harness.module.events,
        "under manual optimization optimizer_step called configure_gradient_clipping: the Trainer clips only under"
        " automatic optimization (model.automatic_optimization), as Lightning's Precision._clip_gradients does",
    )
    _close(
        harness.module.gradients["step"],
        true,
        "under manual optimization the step applied other gradients than the true ones: do not clip them there",
    )


@check(targets=TRAINER)
def trainer_clips_by_value_through_the_hook(subject: Subject, contract: Contract) -> None:
    """With gradient_clip_algorithm="value", configure_gradient_clipping gets the Trainer's value and algorithm, and the
    step applies the true gradients clamped to ±gradient_clip_val."""
    harness = Harness(subject, clip=_CLIP_VALUE, algorithm="value")
    true = _true_gradients(harness.net, subject)
    harness.automatic_step()
    _require(
        harness.module.clipping == [(_CLIP_VALUE, "value")],
        f"configure_gradient_clipping was called with {harness.module.clipping}; it must get the Trainer's"
        f" gradient_clip_val and gradient_clip_algorithm, [({_CLIP_VALUE}, 'value')], once: pass both on",
    )
    _close(
        harness.module.gradients["step"],
        [g.clamp(-_CLIP_VALUE, _CLIP_VALUE) for g in true],
        f"with gradient_clip_algorithm='value' the step applied gradients other than the true ones clamped to"
        f" ±{_CLIP_VALUE}: clip by the algorithm the Trainer is configured with",
    )


# --- the step contexts enter forward_context ---------------------------------------------------------------


def _precision_state(device: Any) -> tuple[bool, torch.dtype, torch.dtype]:
    return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type), torch.get_default_dtype()


@check(targets=TRAINER)
def trainer_step_contexts_enter_forward_context(subject: Subject, contract: Contract) -> None:
    """train_step_context, val_step_context, test_step_context and predict_step_context each set what
    forward_context() sets (autocast and its dtype, the default dtype): Trainer.fit, validate, test and predict run
    their steps in them."""
    p: Any = subject.make()
    with p.forward_context():
        expected = _precision_state(subject.device)
    for name in ("train_step_context", "val_step_context", "test_step_context", "predict_step_context"):
        with getattr(p, name)():
            got = _precision_state(subject.device)
        _require(
            got == expected,
            f"inside {name}() autocast, its dtype and the default dtype are {got}; inside forward_context() they are"
            f" {expected}: each step context must enter self.forward_context()",
        )


# --- resuming a checkpoint of another precision (on_load_checkpoint) ------------------------------------------

#: Where a checkpoint may hold GradScaler state: under Lightning's plugins' class names, and the key of older
#: checkpoints, which the Trainer loads into any MixedPrecision.
_SAVED_SCALER_KEYS = (*_SCALER_KEYS, "native_amp_scaling_state")
#: A "16-mixed" run's GradScaler state, as torch's GradScaler.state_dict() has it, with a scale no fresh one has.
_SAVED_SCALER_STATE = {
    "scale": 512.0,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "_growth_tracker": 3,
}


class _Wrapper(torch.nn.Module):
    """A module that holds the LightningModule, as a strategy's wrapper (DDP's) does."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def _restore(subject: Subject, stage: str, checkpoint: dict[str, Any]) -> Harness:
    """A new object of the subject's, connected by a Trainer in ``stage`` (fit, validate, test, predict) that then
    restores its state from ``checkpoint`` as the Trainer's checkpoint connector does."""
    from lightning.pytorch.trainer.states import TrainerFn

    harness = Harness(subject)
    harness.trainer.state.fn = TrainerFn(stage)
    # The strategy connects the LightningModule, or a wrapper of it (DDP's): the plugin finds it inside.
    harness.p.connect(_Wrapper(harness.module), [harness.optimizer], [])
    connector = harness.trainer._checkpoint_connector
    connector._loaded_checkpoint = checkpoint
    try:
        connector.restore_precision_plugin_state()
    finally:
        connector._loaded_checkpoint = {}
    return harness


@check(applies=lambda contract: not contract.loss_scaling, targets=TRAINER)
def trainer_resume_refuses_scaler_state(subject: Subject, contract: Contract) -> None:
    """Resuming a fit from a checkpoint with GradScaler state (a "16-mixed" run's) into this precision, which has no
    GradScaler, raises StateDictError, wherever Lightning files it: the scale is never dropped in silence."""
    from mixprec._errors import StateDictError

    for key in _SAVED_SCALER_KEYS:
        try:
            _restore(subject, "fit", {key: dict(_SAVED_SCALER_STATE)})
        except StateDictError as exc:
            told = str(exc)
            _require(
                repr(key) in told and repr(_SAVED_SCALER_STATE["scale"]) in told and "'16-mixed'" in told,
                f"resuming GradScaler state under {key!r} raised StateDictError({told!r}); its message must name"
                f" where the state is ({key!r}), the scale saved ({_SAVED_SCALER_STATE['scale']!r}) and how to"
                " resume ('16-mixed')",
            )
            continue
        except Exception as exc:
            raise CheckFailed(
                f"resuming a fit from a checkpoint with GradScaler state under {key!r} raised {type(exc).__name__}:"
                f" {(str(exc) or ' ').splitlines()[0]}; it must raise mixprec.StateDictError saying how to resume"
            ) from None
        raise CheckFailed(
            f"resuming a fit from a checkpoint with GradScaler state under {key!r} into {subject.precision!r}, which"
            " has no GradScaler, dropped the state in silence: on_load_checkpoint(checkpoint) must raise"
            " mixprec.StateDictError (mixprec.precision's Trainer classes do)"
        )


@check(applies=lambda contract: not contract.loss_scaling, targets=TRAINER)
def trainer_evaluates_from_scaler_checkpoint(subject: Subject, contract: Contract) -> None:
    """Trainer.validate, test and predict from a "16-mixed" run's checkpoint work in this precision: only a fit
    resumes training, so only a fit refuses GradScaler state it cannot take."""
    for stage in ("validate", "test", "predict"):
        try:
            _restore(subject, stage, {"FSDPPrecision": dict(_SAVED_SCALER_STATE)})
        except Exception as exc:
            raise CheckFailed(
                f"Trainer.{stage}(ckpt_path=...) from a '16-mixed' run's checkpoint raised {type(exc).__name__}:"
                f" {(str(exc) or ' ').splitlines()[0]}. Only a fit resumes training: refuse GradScaler state only"
                " when the Trainer fits (trainer.state.fn == TrainerFn.FITTING, known in connect())"
            ) from None


@check(applies=_scaler, targets=TRAINER)
def trainer_resume_finds_scaler_state(subject: Subject, contract: Contract) -> None:
    """Resuming a fit restores GradScaler state filed under any of Lightning's keys ("MixedPrecision",
    "FSDPPrecision", "native_amp_scaling_state"), not only the class's own: a run resumed with or without FSDP, or
    from an older checkpoint, keeps its scale."""
    for key in _SAVED_SCALER_KEYS:
        harness = _restore(subject, "fit", {key: dict(_SAVED_SCALER_STATE)})
        scale = harness.scale()
        _require(
            scale == _SAVED_SCALER_STATE["scale"],
            f"resuming a fit from a checkpoint with GradScaler state under {key!r} left the scale at {scale}, not the"
            f" {_SAVED_SCALER_STATE['scale']} saved: on_load_checkpoint must file state saved under another of"
            f" Lightning's keys {_SAVED_SCALER_KEYS} under the class's __qualname__, where the Trainer loads it",
        )


@check(applies=_scaler, targets=TRAINER)
def trainer_resume_without_scaler_state_warns(subject: Subject, contract: Contract) -> None:
    """Resuming a fit from a checkpoint without GradScaler state (a "bf16-mixed" or "true" run's) warns
    PrecisionWarning that the scale starts fresh, and then trains with a fresh scale."""
    from mixprec._errors import PrecisionWarning

    fresh = Harness(subject).scale()
    other: Any = subject.make()
    # What a "bf16-mixed" run of mixprec's saves: its "mixprec" entry alone, under Lightning's class name.
    checkpoint = {"MixedPrecision": {STATE_ENTRY: copy.deepcopy(other.state_dict().get(STATE_ENTRY))}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            harness = _restore(subject, "fit", checkpoint)
        except Exception as exc:
            raise CheckFailed(
                f"resuming a fit from a checkpoint without GradScaler state raised {type(exc).__name__}:"
                f" {(str(exc) or ' ').splitlines()[0]}; it must warn (mixprec.PrecisionWarning) and train on with a"
                " fresh scale: drop the entry without scaler state in on_load_checkpoint"
            ) from None
    _require(
        any(issubclass(w.category, PrecisionWarning) for w in caught),
        "resuming a fit from a checkpoint without GradScaler state said nothing: on_load_checkpoint must warn"
        " mixprec.PrecisionWarning that the scale starts fresh",
    )
    harness.automatic_step()
    _require(
        harness.scale() == fresh and harness.optimizer.returned is not None,
        f"after resuming from a checkpoint without GradScaler state the first step left the scale at"
        f" {harness.scale()} (a fresh one is {fresh}) or took no step",
    )


@check(applies=lambda c: _scaler(c) and _wide_parameters(c), capability="fused_optimizers", targets=TRAINER)
def trainer_fused_optimizer_clipped(subject: Subject, contract: Contract) -> None:
    """With a GradScaler and gradient_clip_val, the Trainer steps a fused optimizer (one that unscales in its own
    step) as any other: on_before_optimizer_step sees the true gradients, and the step applies them clipped."""
    harness = Harness(subject, clip=_CLIP_NORM, fused=True)
    true = _true_gradients(harness.net, subject)
    try:
        harness.automatic_step()
    except Exception as exc:
        raise CheckFailed(
            f"a Trainer step of SGD(fused=True) with gradient_clip_val raised {type(exc).__name__}:"
            f" {(str(exc) or ' ').splitlines()[0]}. Unscale its gradients right after the closure (scaler.unscale_"
            " unscales a fused optimizer's too), as for any optimizer, or declare 'fused_optimizers' in"
            " Backend.unsupported"
        ) from None
    _close(
        harness.module.gradients["on_before_optimizer_step"],
        true,
        "with SGD(fused=True) on_before_optimizer_step saw gradients that are not the true ones: unscale a fused"
        " optimizer's gradients right after the closure too",
    )
    _close(
        harness.module.gradients["step"],
        _clipped_by_norm(true, _CLIP_NORM),
        f"with SGD(fused=True) the step applied gradients that are not the true ones clipped to norm {_CLIP_NORM}",
    )
