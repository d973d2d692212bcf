"""A Trainer built around one object of a subject's, as the Trainer's loops see it: what the Trainer's checks share.

:class:`Harness` makes the object (``target="trainer"``), puts the suite's model in a
LightningModule that records the hooks the precision calls, and attaches both to a real
``lightning.pytorch.Trainer`` without running a loop, so that a check can call the object's
methods exactly as the Trainer's strategy and loops do (``strategy.backward``,
``optimizer_step(optimizer, model, closure)``) and see each hook and step. Importing this module
imports neither the Trainer nor any check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mixprec.testing._base import (
    CheckFailed,
    CheckSkipped,
    Subject,
    _loss,
    _param_groups,
    _poison,
    quiet_trainer,
    trainer_placement,
)

__all__ = ["Harness", "gradients"]


def _lightning_module_class() -> type:
    """The suite's model as a LightningModule that records the hooks the precision plugin calls."""
    from lightning.pytorch import LightningModule

    class Recorder(LightningModule):
        def __init__(
            self, net: nn.Module, subject: Subject, *, skip: bool = False, manual: bool = False, fused: bool = False
        ) -> None:
            super().__init__()
            self.fused = fused
            self.net = net
            self.subject = subject
            self.skip = skip
            self.automatic_optimization = not manual
            self.events: list[str] = []
            self.gradients: dict[str, list[Tensor]] = {}
            self.clipping: list[tuple[Any, Any]] = []

        def forward(self, inputs: Tensor) -> Tensor:
            out: Tensor = self.net(inputs)
            return out

        def training_step(self, batch: Any, index: int) -> Tensor | None:
            return None if self.skip else _loss(self.net, self.subject)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return _Recording(_param_groups(self.net), self.events, self.gradients, fused=self.fused)

        def on_before_backward(self, loss: Tensor) -> None:
            self.events.append("on_before_backward")

        def on_after_backward(self) -> None:
            self.events.append("on_after_backward")
            self.gradients["on_after_backward"] = gradients(self.net)

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.events.append("on_before_optimizer_step")
            self.gradients["on_before_optimizer_step"] = [
                p.grad.detach().clone() for p in self.net.parameters() if p.grad is not None
            ]

        def configure_gradient_clipping(
            self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
        ) -> None:
            self.events.append("configure_gradient_clipping")
            self.clipping.append((gradient_clip_val, gradient_clip_algorithm))
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    return Recorder


def _callback(events: list[str]) -> Any:
    """A Trainer callback that records, as "callback.HOOK", the hooks around backward and the step it is called."""
    from lightning.pytorch import Callback

    class Hooks(Callback):
        def on_before_backward(self, trainer: Any, module: Any, loss: Tensor) -> None:
            events.append("callback.on_before_backward")

        def on_after_backward(self, trainer: Any, module: Any) -> None:
            events.append("callback.on_after_backward")

        def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
            events.append("callback.on_before_optimizer_step")

    return Hooks()


class _Recording(torch.optim.SGD):
    """SGD that records when it steps and the gradients it steps with, after running the closure it is given."""

    def __init__(
        self, groups: list[dict[str, Any]], events: list[str], gradients: dict[str, list[Tensor]], *, fused: bool
    ) -> None:
        super().__init__(groups, fused=fused or None)
        self.events = events
        self.recorded = gradients
        #: What each closure this optimizer was given returned, and what its last step returned.
        self.closure_results: list[Any] = []
        self.returned: Any = None

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Run ``closure``, record the gradients, step; ``kwargs`` are what a GradScaler passes a fused optimizer."""
        result: Any = _NO_CLOSURE
        if closure is not None:
            with torch.enable_grad():
                result = closure()
            self.closure_results.append(result)
        self.events.append("step")
        self.recorded["step"] = [
            p.grad.detach().clone() for g in self.param_groups for p in g["params"] if p.grad is not None
        ]
        super().step(**kwargs)
        self.returned = result
        return result


#: What the recording optimizer's step returns when it is given no closure: torch's SGD returns None there, which
#: would not tell a step's output from a lost one.
_NO_CLOSURE = object()


def gradients(model: nn.Module) -> list[Tensor]:
    """Copies of the gradients of ``model``'s parameters; a parameter without one fails the check."""
    grads = [param.grad for param in model.parameters()]
    if any(grad is None for grad in grads):
        raise CheckFailed(
            "after the Trainer's backward some parameters have no gradient: backward(tensor, model, optimizer)"
            " must compute them (model.backward(tensor), as Lightning's Precision does)"
        )
    return [grad.detach().clone() for grad in grads if grad is not None]


class Harness:
    """One object of the subject's, in a Trainer with the suite's model as a LightningModule, as a loop sees it."""

    def __init__(
        self,
        subject: Subject,
        *,
        clip: float | None = None,
        algorithm: str = "norm",
        options: dict[str, Any] | None = None,
        **flags: bool,
    ) -> None:
        from lightning.pytorch import Trainer
        from lightning.pytorch.accelerators import AcceleratorRegistry

        device = subject.device
        if device.type not in AcceleratorRegistry:
            raise CheckSkipped(f"the Lightning Trainer has no accelerator named {device.type!r}")
        self.subject = subject
        # The Trainer's object: a lightning.pytorch Precision, which Subject.make's type does not say.
        p: Any = subject.make(**(options or {}))
        self.p = p
        net = p.convert_module(subject.model())
        self.module = _lightning_module_class()(net, subject, **flags)
        with quiet_trainer():
            self.trainer = Trainer(
                **trainer_placement(device),
                plugins=[p],
                callbacks=[_callback(self.module.events)],
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
        # As in a run, the Trainer holds the optimizer (trainer.optimizers), which a plugin may read.
        self.trainer.strategy.optimizers = [self.optimizer]
        self.closures = 0
        #: What the Trainer's closure returned, each time it ran.
        self.losses: list[Tensor | None] = []

    @property
    def net(self) -> nn.Module:
        net: nn.Module = self.module.net
        return net

    def backward(self, optimizer: Any) -> tuple[Tensor, Tensor]:
        """The training step's loss through the strategy's backward: pre_backward, backward, post_backward; the loss
        and what the strategy's backward returned."""
        loss = _loss(self.net, self.subject)
        returned: Tensor = self.trainer.strategy.backward(loss, optimizer)
        return loss, returned

    def automatic_step(self, poison: float | None = None) -> Any:
        """One step of automatic optimization: optimizer_step with the closure the Trainer's loop builds.

        With ``poison`` (inf or NaN), the closure puts it into the first gradient after backward.
        """

        def closure() -> Tensor | None:
            self.closures += 1
            self.optimizer.zero_grad()
            loss: Tensor | None = self.module.training_step(None, 0)
            if loss is None:
                self.losses.append(None)
                return None
            self.trainer.strategy.backward(loss, self.optimizer)
            if poison is not None:
                _poison(self.net, poison)
            self.module.events.append("closure")
            self.losses.append(loss.detach())
            return self.losses[-1]

        return self.p.optimizer_step(self.optimizer, model=self.module, closure=closure)

    def scale(self) -> float:
        scaler = getattr(self.p, "scaler", None)
        return float(scaler.get_scale()) if isinstance(scaler, torch.amp.GradScaler) else 1.0
