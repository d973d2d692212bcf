"""The stale optimizer: one whose parameters are not those the model trains, caught at its first step.

An optimizer holds the parameter tensors it was built with. ``model.to(device)`` moves them in
place on CPU and CUDA, but on devices whose tensors cannot share a CPU tensor's storage (PrivateUse1
devices such as Ascend's, and other out-of-tree ones) it *replaces* them. An optimizer built
before the model was moved then keeps the old CPU tensors: the gradients go to the new ones, and
every step updates nothing, in silence ("16-mixed" fails later with a GradScaler error that does
not say why).

Every mixprec precision object checks each optimizer once, at its first step, after the
gradients are computed: parameters off the precision's device of which none has a gradient are
that optimizer. A later step of the same optimizer costs one attribute read. Parameters
kept off the device on purpose (CPU offloading) carry gradients, and pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from mixprec._errors import OptimizerDeviceError

__all__ = ["OptimizerDeviceCheck", "stale_optimizer"]


def stale_optimizer(optimizer: Any, device_type: str) -> OptimizerDeviceError | None:
    """The error for ``optimizer`` if its parameters are off ``device_type`` and none has a gradient; else None."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list):
        return None
    off = [p for group in groups for p in group.get("params", ()) if getattr(p, "device", None) is not None]
    off = [p for p in off if p.device.type != device_type]
    if not off or any(p.grad is not None for p in off):
        return None
    where = ", ".join(sorted({str(p.device) for p in off}))
    return OptimizerDeviceError(
        f"{type(optimizer).__name__} holds {len(off)} parameter tensor(s) on {where}, not on {device_type!r} where"
        " the model computes, and none of them has a gradient: the optimizer was built before the model was moved,"
        f" and on {device_type!r} moving a model replaces its parameters, so this optimizer would update nothing."
        " Build the optimizer from model.parameters() after moving the model: with Fabric,"
        " model = fabric.setup_module(model) first, then fabric.setup_optimizers(Optimizer(model.parameters()));"
        " with the Trainer, build it in configure_optimizers()."
    )


class OptimizerDeviceCheck:
    """A mixin for Lightning precision classes: an optimizer whose parameters are stale fails its first step.

    It reads the device type from the object's ``device`` (mixprec's autocast classes) or
    ``mixprec_device`` (set by :mod:`mixprec.precision`'s builders on the others); an object with
    neither is not checked. Fabric calls ``optimizer_step`` after the backward pass, and the Trainer
    passes a ``closure`` that runs it; each optimizer is checked once, after its gradients exist.
    """

    def optimizer_step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        device_type = getattr(self, "device", None) or getattr(self, "mixprec_device", None)
        if isinstance(device_type, str) and getattr(optimizer, _CHECKED, None) != device_type:
            if "closure" in kwargs:
                kwargs["closure"] = _checked_after(kwargs["closure"], optimizer, device_type)
            else:
                _check(optimizer, device_type)
        return super().optimizer_step(optimizer, *args, **kwargs)  # type: ignore[misc]


#: The attribute marking an optimizer as checked, with the device type it was checked for. It is on the
#: optimizer, not the precision object, so that it costs one attribute read and pickles with neither
#: (torch's optimizers pickle only their state and groups, and are checked again after loading).
_CHECKED = "_mixprec_checked_on"


def _check(optimizer: Any, device_type: str) -> None:
    error = stale_optimizer(optimizer, device_type)
    if error is not None:
        raise error
    with contextlib.suppress(AttributeError, TypeError):  # an optimizer-like object without a __dict__
        setattr(optimizer, _CHECKED, device_type)


def _checked_after(closure: Callable[[], Any], optimizer: Any, device_type: str) -> Callable[[], Any]:
    """``closure``, checking ``optimizer`` once the closure has computed the gradients."""

    def run() -> Any:
        result = closure()
        if getattr(optimizer, _CHECKED, None) != device_type:
            _check(optimizer, device_type)
        return result

    return run
