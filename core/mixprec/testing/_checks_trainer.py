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
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from mixprec._contract import Contract
from mixprec.testing._base import (
    _LR,
    TRAINER,
    CheckFailed,
    CheckSkipped,
    Subject,
    _autocast,
    _close,
    _loss,
    _param_groups,
    _require,
    _scaler,
    _sgd_step,
    _true_gradients,
    _weights,
    check,
    quiet_trainer,
)

#: Clipping thresholds well below the suite's gradients (norm about 0.5, largest entry about 0.3), so that
#: clipping changes every step it applies to.
_CLIP_NORM = 0.05
_CLIP_VALUE = 0.01

#: Lightning's own class names for precision plugins with a GradScaler: the keys the Trainer files its
#: state under, so that checkpoints move between Lightning's plugin and a backend's.
_SCALER_KEYS = ("MixedPrecision", "FSDPPrecision")


def _lightning_module_class() -> type:
    """The suite's model as a LightningModule that records the hooks the precision plugin calls."""
    from lightning.pytorch import LightningModule

    class Recorder(LightningModule):
        def __init__(self, net: nn.Module, subject: Subject, *, skip: bool = False, manual: bool = False) -> None:
            super().__init__()
            self.net = net
            self.subject = subject
            self.skip = skip
            self.automatic_optimization = not manual
            self.events: list[str] = []
            self.gradients: dict[str, list[Tensor]] = {}

        def forward(self, inputs: Tensor) -> Tensor:
            out: Tensor = self.net(inputs)
            return out

        def training_step(self, batch: Any, index: int) -> Tensor | None:
            return None if self.skip else _loss(self.net, self.subject)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return _Recording(_param_groups(self.net), self.events, self.gradients)

        def on_before_backward(self, loss: Tensor) -> None:
            self.events.append("on_before_backward")

        def on_after_backward(self) -> None:
            self.events.append("on_after_backward")
            self.gradients["on_after_backward"] = _grads(self.net)

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.events.append("on_before_optimizer_step")

        def configure_gradient_clipping(
            self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
        ) -> None:
            self.events.append("configure_gradient_clipping")
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    return Recorder


class _Recording(torch.optim.SGD):
    """SGD that records when it steps and the gradients it steps with, after running the closure it is given."""

    def __init__(self, groups: list[dict[str, Any]], events: list[str], gradients: dict[str, list[Tensor]]) -> None:
        super().__init__(groups)
        self.events = events
        self.recorded = gradients

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        result = None
        if closure is not None:
            with torch.enable_grad():
                result = closure()
        self.events.append("step")
        self.recorded["step"] = [
            p.grad.detach().clone() for g in self.param_groups for p in g["params"] if p.grad is not None
        ]
        super().step()
        return result


def _grads(model: nn.Module) -> list[Tensor]:
    grads = [param.grad for param in model.parameters()]
    if any(grad is None for grad in grads):
        raise CheckFailed(
            "after the Trainer's backward some parameters have no gradient: backward(tensor, model, optimizer)"
            " must compute them (model.backward(tensor), as Lightning's Precision does)"
        )
    return [grad.detach().clone() for grad in grads if grad is not None]


class _Harness:
    """One object of the subject's, in a Trainer with the suite's model as a LightningModule, as a loop sees it."""

    def __init__(self, subject: Subject, *, clip: float | None = None, algorithm: str = "norm", **flags: bool) -> None:
        from lightning.pytorch import Trainer
        from lightning.pytorch.accelerators import AcceleratorRegistry

        device = subject.device
        if device.type not in AcceleratorRegistry:
            raise CheckSkipped(f"the Lightning Trainer has no accelerator named {device.type!r}")
        self.subject = subject
        # The Trainer's object: a lightning.pytorch Precision, which Subject.make's type does not say.
        p: Any = subject.make()
        self.p = p
        net = p.convert_module(subject.model())
        self.module = _lightning_module_class()(net, subject, **flags)
        with quiet_trainer():
            self.trainer = Trainer(
                accelerator=device.type,
                devices=1 if device.index is None else [device.index],
                plugins=[p],
                gradient_clip_val=clip,
                gradient_clip_algorithm=algorithm,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        self.trainer.strategy.connect(self.module)
        self.module.trainer = self.trainer
        self.optimizer = self.module.configure_optimizers()
        self.closures = 0

    @property
    def net(self) -> nn.Module:
        net: nn.Module = self.module.net
        return net

    def backward(self, optimizer: Any) -> Tensor:
        """The training step's loss through the strategy's backward: pre_backward, backward, post_backward."""
        loss = _loss(self.net, self.subject)
        self.trainer.strategy.backward(loss, optimizer)
        return loss

    def automatic_step(self) -> None:
        """One step of automatic optimization: optimizer_step with the closure the Trainer's loop builds."""

        def closure() -> Tensor | None:
            self.closures += 1
            self.optimizer.zero_grad()
            loss: Tensor | None = self.module.training_step(None, 0)
            if loss is None:
                return None
            self.trainer.strategy.backward(loss, self.optimizer)
            self.module.events.append("closure")
            return loss.detach()

        self.p.optimizer_step(self.optimizer, model=self.module, closure=closure)

    def scale(self) -> float:
        scaler = getattr(self.p, "scaler", None)
        return float(scaler.get_scale()) if isinstance(scaler, torch.amp.GradScaler) else 1.0


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
    harness = _Harness(subject)
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
    harness = _Harness(subject)
    expected = _true_gradients(harness.net, harness.subject)
    scale = harness.scale()
    harness.backward(harness.optimizer)
    what = "scaled by the GradScaler's scale" if contract.loss_scaling else "of the loss"
    _close(
        _grads(harness.net),
        [g * scale for g in expected],
        f"after the Trainer's backward the gradients are not those {what}: pre_backward must scale the loss"
        " (scaler.scale) where there is a GradScaler, and backward compute its gradients (model.backward)",
    )


# --- optimizer_step -----------------------------------------------------------------------------------


@check(targets=TRAINER)
def trainer_closure_runs_once(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, model, closure) runs the closure (training_step and backward) exactly once."""
    harness = _Harness(subject)
    harness.automatic_step()
    _require(
        harness.closures == 1,
        f"optimizer_step ran the closure {harness.closures} times; the Trainer's closure runs training_step and"
        " backward, and must run once per step: call it once (or pass it to optimizer.step, which calls it once)",
    )


@check(targets=TRAINER)
def trainer_step_applied(subject: Subject, contract: Contract) -> None:
    """optimizer_step steps once with the true (unscaled) gradients, in every parameter group with its settings."""
    harness = _Harness(subject)
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
    harness = _Harness(subject, skip=True)
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
    harness = _Harness(subject, manual=True)
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
    harness = _Harness(subject, clip=_CLIP_NORM)
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

    harness = _Harness(subject)
    true = _true_gradients(harness.net, subject)
    for param, grad in zip(harness.net.parameters(), true, strict=True):
        param.grad = grad.clone()
    harness.p.clip_gradients(harness.optimizer, limit, GradClipAlgorithmType(algorithm))
    _close(
        _grads(harness.net),
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

        def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
            inputs, targets = batch
            loss = F.mse_loss(self.net(inputs).float(), targets)
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
            accelerator=device.type,
            devices=1 if device.index is None else [device.index],
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
        _require(not state, f"state_dict() after Trainer.fit is {state!r}; the contract scales no loss: it is empty")
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
