"""The Trainer's counterparts of mixprec's Fabric classes (:mod:`mixprec._fabric`), for ``target="trainer"``.

``lightning.pytorch.Trainer(plugins=[...])`` accepts only ``lightning.pytorch`` precision plugins,
so these put the same mixins on the Trainer's base classes. They carry the names of the Lightning
classes they extend on purpose: the Trainer files a precision plugin's state in a checkpoint under
the class's ``__qualname__``, so with the same name a checkpoint moves between Lightning's own
plugin and mixprec's in both directions without losing the GradScaler state.

What they do beyond the Fabric classes' promises:

- a fused optimizer (one that unscales inside ``step()``) clips and steps, with a scaler or
  without one (Lightning 2.6.6's ``MixedPrecision`` refuses every fused optimizer, Lightning
  #21435). With a scaler its gradients are unscaled right after the closure's backward, where
  Lightning unscales every other optimizer's, so ``on_before_optimizer_step`` and clipping see
  the true gradients; torch's ``GradScaler.step`` knows they were unscaled, skips the step if they
  overflowed and steps the fused optimizer with them as they are;
- resuming a fit never loses scaler state: ``on_load_checkpoint`` sees the whole checkpoint before
  the Trainer restores the entry filed under this class's name (and skips the others in silence).
  GradScaler state that this precision cannot take is a :class:`~mixprec.StateDictError`; a
  checkpoint without one, resumed into a precision with a scaler, is a
  :class:`~mixprec.PrecisionWarning` that the scale starts fresh.

Importing this module imports ``lightning.pytorch``; :mod:`mixprec.precision` imports it only when
a Trainer object is asked for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins import precision as lightning
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch.amp.grad_scaler import OptState
from torch.nn import Module
from torch.optim import Optimizer
from typing_extensions import override

from mixprec._errors import ClosureError, PrecisionWarning, StateDictError
from mixprec._fabric import DeviceFSDP, ScalerGuard, _forget_unscaling, _stage
from mixprec._telemetry import holds_scaler_state

__all__ = [
    "TrainerAutocastPrecision",
    "DoublePrecision",
    "FSDPPrecision",
    "HalfPrecision",
    "MixedPrecision",
    "Precision",
    "mixed_precision",
    "true_precision",
]

#: Where the Trainer files GradScaler state: under the ``__qualname__`` of Lightning's precision
#: classes that carry a scaler, and under the key of checkpoints older than those classes.
_SCALER_STATE_KEYS = ("MixedPrecision", "FSDPPrecision", "native_amp_scaling_state")


class _TrainerGuard(ScalerGuard):
    """What each of mixprec's Trainer classes adds to Lightning's: clipping and resuming that lose nothing."""

    #: Whether the run this object serves fits, so that a checkpoint given to it resumes training:
    #: validating, testing or predicting from a checkpoint of another precision is fine.
    _fitting = True

    def connect(
        self, model: Module, optimizers: list[Optimizer], lr_schedulers: list[Any]
    ) -> tuple[Module, list[Optimizer], list[Any]]:
        # The strategy connects the plugin in every run, before the Trainer restores a checkpoint.
        self._fitting = _is_fitting(model)
        return super().connect(model, optimizers, lr_schedulers)  # type: ignore[misc, no-any-return]

    def clip_gradients(
        self,
        optimizer: Optimizer,
        clip_val: int | float = 0.0,
        gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM,
    ) -> None:
        # LightningModule.clip_gradients passes the LightningOptimizer it was given; the GradScaler knows the optimizer.
        optimizer = getattr(optimizer, "_optimizer", optimizer)
        if not _has_gradients(optimizer):
            # A skipped batch (training_step returned None): nothing to clip, and torch's clip_grad_value_ raises.
            return
        if _scaled_gradients(self.scaler, optimizer) and clip_val > 0:
            # Under manual optimization (self.clip_gradients(opt, ...) between manual_backward and opt.step()) the
            # gradients are still scaled: unscale them first, as fabric.clip_gradients does, so that they are
            # clipped at their true size; optimizer_step then steps without unscaling again.
            self.unscale_gradients(optimizer)
        # Lightning's MixedPrecision.clip_gradients refuses every fused optimizer, scaler or not, though its
        # gradients are unscaled by now (see _unscaling_fused): clip with the base class's code, which every other
        # Lightning class uses as it is.
        lightning.Precision.clip_gradients(self, optimizer, clip_val, gradient_clip_algorithm)  # type: ignore[arg-type]

    def optimizer_step(self, optimizer: Any, model: Any = None, closure: Any = None, **kwargs: Any) -> Any:
        """Lightning's ``optimizer_step(optimizer, model, closure)``, with a fused optimizer's gradients unscaled
        right after the closure where there is a scaler (see :func:`_unscaling_fused`).

        ``model`` and ``closure`` are required, as in Lightning's Trainer classes; their defaults only keep the
        signature one that Fabric's ``optimizer_step(optimizer, **kwargs)`` also fits, for classes on both.
        """
        if self.scaler is not None and _stage(self.scaler, optimizer) is OptState.UNSCALED:
            # Unscaled by clip_gradients before the step (manual optimization): step without unscaling again.
            return _step_unscaled(self, optimizer, model, closure, kwargs)
        closure = _unscaling_fused(self, optimizer, model, closure)
        result = self._lightning_step(optimizer, model, closure, kwargs)
        if self.scaler is not None and _stage(self.scaler, optimizer) is OptState.UNSCALED:
            # The closure ran no backward (training_step returned None), so no step followed clipping's unscaling:
            # forget it, so that the next step unscales its own gradients.
            _forget_unscaling(self.scaler, optimizer)
        return result

    def _lightning_step(self, optimizer: Any, model: Any, closure: Any, kwargs: dict[str, Any]) -> Any:
        """The step of the Lightning class this one extends."""
        return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._fitting:
            _check_resumed_scaler_state(self, checkpoint)
        elif self.scaler is None and holds_scaler_state(checkpoint.get(type(self).__qualname__)):
            # Evaluating from a "16-mixed" checkpoint of the same class (FSDP's): its GradScaler state is not needed.
            checkpoint.pop(type(self).__qualname__)
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def _unscaling_fused(
    plugin: _TrainerGuard, optimizer: Any, model: Any, closure: Callable[[], Any]
) -> Callable[[], Any]:
    """The closure to hand Lightning's ``optimizer_step``: ``closure`` as it is, or for an optimizer that unscales
    in its own step (fused) under a scaler, ``closure`` followed by the unscaling of its gradients.

    Lightning unscales the gradients of every other optimizer right after the closure, before
    ``on_before_optimizer_step`` and clipping; this puts the fused one's unscaling at the same place.
    """
    if plugin.scaler is None or not getattr(optimizer, "_step_supports_amp_scaling", False):
        return closure

    def run() -> Any:
        result = closure()
        # Lightning's own rule: in automatic optimization a closure that returns None ran no backward.
        if result is not None or not model.automatic_optimization:
            plugin.unscale_gradients(optimizer)
        return result

    return run


def _scaled_gradients(scaler: Any, optimizer: Any) -> bool:
    """Whether ``optimizer``'s gradients are still scaled by ``scaler``: it has scaled a loss (torch builds its scale at
    the first ``scale()``), the optimizer has gradients, and the scaler has neither unscaled them nor stepped since
    its last update."""
    if scaler is None or getattr(scaler, "_scale", None) is None:
        return False
    return _has_gradients(optimizer) and _stage(scaler, optimizer) is OptState.READY


def _has_gradients(optimizer: Any) -> bool:
    """Whether any parameter of ``optimizer`` has a gradient (a skipped batch's are all None)."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


def _step_unscaled(plugin: _TrainerGuard, optimizer: Any, model: Any, closure: Any, kwargs: dict[str, Any]) -> Any:
    """A step through the scaler of gradients clip_gradients unscaled already: the closure, the hooks of
    ``_after_closure``, then ``scaler.step`` (which skips the step on inf/NaN it found while unscaling) and
    ``scaler.update()``; the step's output, as Lightning's ``MixedPrecision.optimizer_step`` returns it."""
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ClosureError(
            "LBFGS evaluates its closure several times in one step, and a GradScaler checks and unscales the"
            f" gradients of one backward per step, so LBFGS cannot train in {plugin.precision!r}. Use a precision"
            " without loss scaling ('bf16-mixed' or '32-true'), or an optimizer that evaluates its closure once."
        )
    scaler: Any = plugin.scaler
    if closure is not None:
        closure()
    plugin._after_closure(model, optimizer)  # type: ignore[attr-defined]
    output = scaler.step(optimizer, **kwargs)
    scaler.update()
    return output


def _is_fitting(model: Module) -> bool:
    """Whether the Trainer of the LightningModule in ``model`` (wrapped or not) is fitting; True when unknown."""
    for module in model.modules():
        if isinstance(module, LightningModule):
            # ``LightningModule.trainer`` raises where no Trainer is attached; the attribute is None there.
            trainer = module._trainer
            return trainer is None or trainer.state.fn == TrainerFn.FITTING
    return True


def _check_resumed_scaler_state(plugin: _TrainerGuard, checkpoint: dict[str, Any]) -> None:
    """Refuse GradScaler state ``plugin`` cannot take, warn when it gets none, and file state saved under
    another Lightning class's name under ``plugin``'s, where the Trainer will load it."""
    saved = {key: checkpoint[key] for key in _SCALER_STATE_KEYS if holds_scaler_state(checkpoint.get(key))}
    if plugin.scaler is None:
        if saved:
            key, state = next(iter(saved.items()))
            raise StateDictError(_unresumable(plugin.precision, key, state))
        return
    own = type(plugin).__qualname__
    if own in saved or ("native_amp_scaling_state" in saved and isinstance(plugin, lightning.MixedPrecision)):
        return  # the Trainer loads it next, through load_state_dict
    if saved:
        # A "16-mixed" run resumed with FSDP or without it: the state fits, under another class's name.
        checkpoint[own] = next(iter(saved.values()))
        return
    # A run without loss scaling filed only the "mixprec" entry under this class's name: nothing here to load.
    checkpoint.pop(own, None)
    warnings.warn(
        f"The checkpoint holds no GradScaler state: it was saved by a run without loss scaling ('bf16-mixed' or a"
        f" 'true' precision). This {plugin.precision!r} run starts with a fresh scale of {plugin.scaler.get_scale()},"
        " as a new run does, and may skip its first steps while the scale settles.",
        PrecisionWarning,
        stacklevel=2,
    )


def _unresumable(precision: str, key: str, state: Any) -> str:
    scale = state.get("scale") if isinstance(state, Mapping) else None
    where = f"under {key!r}, scale {float.__repr__(scale)}" if isinstance(scale, float) else f"under {key!r}"
    return (
        f"The checkpoint holds GradScaler state ({where}), saved by a '16-mixed' run, and this {precision!r}"
        " precision has no GradScaler to take it: resuming would drop it in silence. To continue that run, resume"
        " it in '16-mixed': get_precision('16-mixed', device, target='trainer'). To go on in"
        f" {precision!r} without loss scaling on purpose, drop the state before it is restored, in your"
        f" LightningModule: def on_load_checkpoint(self, checkpoint): checkpoint.pop({key!r}, None)."
    )


class MixedPrecision(_TrainerGuard, lightning.MixedPrecision):
    """The Trainer's ``MixedPrecision`` ("16-mixed", "bf16-mixed") on the resolved device."""


#: The public name backends subclass it by (``mixprec.precision.TrainerAutocastPrecision``); the class keeps
#: Lightning's name, under which the Trainer files its state in a checkpoint.
TrainerAutocastPrecision = MixedPrecision


class FSDPPrecision(DeviceFSDP, _TrainerGuard, lightning.FSDPPrecision):
    """The Trainer's ``FSDPPrecision``, for every precision FSDP trains in, on the requested device."""

    # As the Trainer's MixedPrecision: a training_step may step the optimizer inside its autocast context, so no
    # cast of a weight may outlive an update of it.
    _autocast_cache = False

    @override
    def _lightning_step(self, optimizer: Any, model: Any, closure: Any, kwargs: dict[str, Any]) -> Any:
        if self.scaler is None:
            return super()._lightning_step(optimizer, model, closure, kwargs)
        # Lightning's FSDPPrecision unscales after a closure that ran no backward (training_step returned None),
        # which fails on a scaler that has scaled nothing yet; its MixedPrecision's step, the same otherwise, does not.
        return lightning.MixedPrecision.optimizer_step(self, optimizer, model=model, closure=closure, **kwargs)  # type: ignore[arg-type]


class Precision(_TrainerGuard, lightning.Precision):
    """The Trainer's "32-true" ``Precision``."""


class DoublePrecision(_TrainerGuard, lightning.DoublePrecision):
    """The Trainer's ``DoublePrecision`` ("64-true")."""


class HalfPrecision(_TrainerGuard, lightning.HalfPrecision):
    """The Trainer's ``HalfPrecision`` ("16-true", "bf16-true")."""


def mixed_precision(
    precision: str, device: str, scaler: torch.amp.GradScaler | None, strategy: str | None
) -> lightning.Precision:
    """The Trainer's autocast object; ``strategy`` is "fsdp" or None, as :mod:`mixprec.precision` resolved it."""
    if strategy == "fsdp":
        return FSDPPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]
    return MixedPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]


def true_precision(precision: str, device: str, strategy: str | None) -> lightning.Precision:
    """The Trainer's object without autocast or scaler; ``strategy`` as for :func:`mixed_precision`."""
    if strategy == "fsdp":
        return FSDPPrecision(precision, device)
    if precision == "32-true":
        return Precision()
    if precision == "64-true":
        return DoublePrecision()
    return HalfPrecision(precision)  # type: ignore[arg-type]


def one_device_strategy(device_type: str, index: int | None) -> Any:
    """The strategy a one-device Trainer on ``device_type`` needs passed: None for "cpu", "cuda" and "mps", which
    Lightning places itself; else the Trainer's ``SingleDeviceStrategy`` on the device (index 0 for None), because
    Lightning puts an accelerator it does not know on a CPU strategy."""
    if device_type in ("cpu", "cuda", "mps"):
        return None
    from lightning.pytorch.strategies import SingleDeviceStrategy

    return SingleDeviceStrategy(device=torch.device(device_type, index or 0))
