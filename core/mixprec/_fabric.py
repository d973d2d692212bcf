"""Lightning Fabric's precision classes, changed only where they are wrong for mixprec.

Every object is a ``lightning.fabric.plugins.precision.Precision``, so ``Fabric(plugins=[p])``
takes it as it is. What the classes here change:

- the autocast device is the resolved device, never guessed (Lightning's ``FSDPPrecision``
  hard-codes "cuda");
- the GradScaler is the one built for the request (Lightning's ``FSDPPrecision`` drops a scaler
  passed to it and builds one for "cuda");
- ``load_state_dict`` never drops scaler state in silence: a state that does not fit is a
  :class:`~mixprec.StateDictError`, for the "true" precisions too (Lightning's ignore any state);
- ``optimizer.step(closure)`` works with a GradScaler ("16-mixed"), where torch raises: the closure
  runs first, then the step goes through the scaler, and the closure's result is returned, as the
  Trainer's classes do it. LBFGS, which evaluates its closure several times in one step, is refused
  with a :class:`~mixprec.ClosureError` that says what to do;
- unscaling for clipping works with an optimizer that unscales inside its own ``step()``
  (``fused=True``), which Lightning refuses: torch's ``GradScaler.step`` sees that the gradients
  were unscaled already and only skips the step if they overflowed. Unscaling that torch itself
  refuses (a second time before the step) is an :class:`~mixprec.UnscalingError` that says what to do.

Importing this module imports ``lightning.fabric``. :mod:`mixprec.precision` imports it when it
first builds an object or is asked for :class:`AutocastPrecision` or :class:`ScalerGuard`, never
when it is itself imported. The Trainer's classes (:mod:`mixprec._trainer`) reuse the mixins here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from lightning.fabric.plugins.precision import FSDPPrecision as LightningFSDPPrecision
from lightning.fabric.plugins.precision.utils import _convert_fp_tensor
from lightning_utilities.core.apply_func import apply_to_collection
from torch.amp.grad_scaler import OptState
from typing_extensions import override

from mixprec._errors import ClosureError, UnscalingError
from mixprec._optimizer_device import OptimizerDeviceCheck
from mixprec._recording import TelemetryRecorder
from mixprec._scaler import load_state
from mixprec._telemetry import split_state

if TYPE_CHECKING:
    from lightning.fabric.utilities.types import Optimizable
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

__all__ = [
    "AutocastPrecision",
    "DeviceFSDP",
    "DoubleTruePrecision",
    "FSDPPrecision",
    "FullPrecision",
    "HalfTruePrecision",
    "ScalerGuard",
    "mixed_precision",
    "one_device_strategy",
    "true_precision",
]


class ScalerGuard(OptimizerDeviceCheck, TelemetryRecorder):
    """A mixin for Lightning precision classes: no GradScaler state lost, no clipping of scaled gradients, fused
    optimizers clipped too, every optimizer step recorded (``telemetry``, from
    ``TelemetryRecorder``), and an optimizer whose parameters are not on the object's
    device refused at its first step (:class:`~mixprec.OptimizerDeviceError`).

    Put it first among the bases of a subclass of a Lightning ``Precision``, Fabric's or the
    Trainer's. It reads the object's ``precision`` and ``scaler`` (None, the default, where the class
    has no scaler) and promises what Lightning's classes do not:

    - ``load_state_dict(state)`` loads the scaler's whole state or raises
      :class:`~mixprec.StateDictError`: GradScaler state given to a precision without a scaler, an
      empty state given to one with a scaler, a state that lacks an entry or holds a value torch's
      scaler cannot keep. Lightning's classes ignore the first two in silence.
    - ``unscale_gradients(optimizer)`` unscales the gradients once before clipping, for every
      optimizer, ``fused=True`` included (Lightning refuses those): torch's ``GradScaler.step``
      knows the gradients were unscaled and steps the fused optimizer with them as they are, so a
      fused step after clipping is the unfused one's. Without a scaler it changes nothing.
    - ``refuse_unscaling(optimizer)`` raises :class:`~mixprec.UnscalingError` where torch's
      GradScaler cannot unscale ``optimizer``'s gradients now: they were unscaled already since its
      last step, or it was stepped through the scaler and the scale not updated since. Call it
      before ``self.scaler.unscale_(optimizer)`` in code of your own; ``unscale_gradients`` does.

    With ``fabric.load``, put the precision first in the state dict: Fabric restores the entries in
    that dict's order, so a state that does not fit is refused before the model is overwritten.

    Example:
        A "bf16-true" precision of a backend's own, refusing GradScaler state instead of ignoring it::

            from lightning.fabric.plugins.precision import HalfPrecision
            from mixprec.precision import ScalerGuard


            class MyPrecision(ScalerGuard, HalfPrecision):
                pass


            MyPrecision("bf16-true").load_state_dict({})  # an empty state fits: nothing to load
            MyPrecision("bf16-true").load_state_dict({"scale": 1024.0})  # raises mixprec.StateDictError
    """

    precision: Any
    #: The object's GradScaler; None where the class carries none.
    scaler: Any = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the GradScaler state that ``state_dict()`` returned, whole, and the telemetry counters of its
        ``"mixprec"`` entry (a state without one, from an older checkpoint, loads too), or raise StateDictError."""
        scaler_state, entry = split_state(state_dict)
        load_state(self.scaler, scaler_state, self.precision)
        self._restore_telemetry(entry)

    def unscale_gradients(self, optimizer: Any) -> None:
        """Unscale ``optimizer``'s gradients once before clipping, fused optimizers too; without a scaler, nothing."""
        if self.scaler is not None:
            self.refuse_unscaling(optimizer)
            self.scaler.unscale_(optimizer)

    def refuse_unscaling(self, optimizer: Any) -> None:
        """Raise UnscalingError where this object's GradScaler cannot unscale ``optimizer``'s gradients now."""
        if self.scaler is None:
            return
        stage = _stage(self.scaler, optimizer)
        name = type(optimizer).__name__
        if stage is OptState.UNSCALED:
            raise UnscalingError(
                f"The gradients of this {name} were already unscaled since its last step, and a GradScaler unscales"
                " once per step. Unscale (clip with fabric.clip_gradients) once between backward and"
                " optimizer.step(); to clip a second way in the same step, call torch.nn.utils.clip_grad_norm_ or"
                " clip_grad_value_ on the parameters yourself: their gradients are unscaled already."
            )
        if stage is OptState.STEPPED:
            raise UnscalingError(
                f"This {name} was stepped through the GradScaler and the scale not updated since, so its gradients"
                " cannot be unscaled now. Clip before optimizer.step(), not after it, and step through the"
                " precision (optimizer.step() of a Fabric-wrapped optimizer, or precision.optimizer_step), which"
                " updates the scale."
            )

    def __repr__(self) -> str:
        device = getattr(self, "device", None)
        where = "" if device is None else f", device={device!r}"
        return f"{type(self).__module__}.{type(self).__qualname__}(precision={self.precision!r}{where})"


def _stage(scaler: Any, optimizer: Any) -> OptState:
    """Where ``optimizer`` is in ``scaler``'s cycle (ready, unscaled, stepped) since the scaler's last update."""
    # torch keeps it in a private table, by the optimizer's id; an optimizer it has not seen since the update has none.
    state = getattr(scaler, "_per_optimizer_states", {}).get(id(optimizer))
    return OptState.READY if state is None else state["stage"]


@contextmanager
def _lightning_scaler_ignored() -> Iterator[None]:
    """Silence the warning of the "cuda" ShardedGradScaler that Lightning's ``FSDPPrecision.__init__``
    builds for "16-mixed" on a machine without CUDA: mixprec replaces that scaler right after."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*GradScaler is enabled, but CUDA is not available")
        yield


class DeviceFSDP:
    """A mixin for Lightning's ``FSDPPrecision`` (Fabric's or the Trainer's): autocast on the requested
    device with the requested scaler, where Lightning's hard-codes "cuda" for both."""

    precision: Any
    #: Whether autocast caches its casts: Fabric's forward runs no step inside it; the Trainer's class says False.
    _autocast_cache = True

    def __init__(self, precision: Any, device: str, scaler: ShardedGradScaler | None = None) -> None:
        with _lightning_scaler_ignored():
            super().__init__(precision)  # type: ignore[call-arg]
        self.device = device
        self.scaler = scaler

    def forward_context(self) -> AbstractContextManager[Any]:
        if "mixed" in self.precision:
            # Lightning's own choice of dtype, on the device it leaves out.
            return torch.autocast(
                self.device,
                dtype=torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16,
                cache_enabled=self._autocast_cache,
            )
        return super().forward_context()  # type: ignore[misc, no-any-return]


def _scaled_step(plugin: Any, optimizer: Any, step: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``step(optimizer, **kwargs)`` (Lightning's ``optimizer_step``) with a closure too where there is a scaler.

    torch's ``GradScaler.step`` takes no closure, so, as the Trainer's classes do, the closure runs first (under
    grad mode, as torch's optimizers run it), then the step goes through the scaler, which skips it if the
    gradients overflowed, and the closure's result is returned, as ``optimizer.step(closure)`` returns it.
    """
    if plugin.scaler is None:
        return step(optimizer, **kwargs)
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ClosureError(
            "LBFGS evaluates its closure several times in one step, and a GradScaler checks and unscales the"
            f" gradients of one backward per step, so LBFGS cannot train in {plugin.precision!r}. Use LBFGS with a"
            " precision without loss scaling (get_precision('bf16-mixed', device) or '32-true'), or an optimizer"
            " that evaluates its closure once (SGD, Adam, AdamW)."
        )
    kwargs = dict(kwargs)
    closure = kwargs.pop("closure", None)  # None too: the GradScaler refuses the keyword, whatever its value
    if closure is None:
        return step(optimizer, **kwargs)
    with torch.enable_grad():
        try:
            result = closure()
        except BaseException:
            _forget_unscaling(plugin.scaler, optimizer)
            raise
    step(optimizer, **kwargs)
    return result


def _forget_unscaling(scaler: Any, optimizer: Any) -> None:
    """After a closure that raised: undo its unscaling of ``optimizer``, so that the next step may unscale again.

    The step never happened, so the scaler never updated; left as it was, every later clip would raise
    UnscalingError. Its gradients stay as they are: the next step zeroes them, as a step always must.
    """
    if _stage(scaler, optimizer) is OptState.UNSCALED:
        # torch keeps the stage in a private table by the optimizer's id (see _stage); a missing entry is READY.
        scaler._per_optimizer_states.pop(id(optimizer), None)


_ATOMS = frozenset({str, int, float, bool, type(None)})


def _convert_floating(data: Any, dtype: torch.dtype) -> Any:
    """``data`` with its floating tensors cast to ``dtype``: Lightning's ``apply_to_collection`` result.

    A batch's plain containers (dict, list, tuple, namedtuple) are rebuilt here, at a fraction of
    ``apply_to_collection``'s cost per element; anything else is handed to it, so results are the same.
    """
    if isinstance(data, torch.Tensor):
        return data.to(dtype) if data.is_floating_point() else data
    cls = data.__class__
    if cls is dict:
        return {key: _convert_floating(value, dtype) for key, value in data.items()}
    if cls is list:
        return [_convert_floating(item, dtype) for item in data]
    if cls is tuple:
        return tuple([_convert_floating(item, dtype) for item in data])
    if cls in _ATOMS:
        return data
    if isinstance(data, tuple) and hasattr(data, "_asdict") and hasattr(data, "_fields"):
        return cls(*[_convert_floating(item, dtype) for item in data])
    return apply_to_collection(data, torch.Tensor, _convert_fp_tensor, dst_type=dtype)


class AutocastPrecision(ScalerGuard, MixedPrecision):
    """Lightning Fabric's ``MixedPrecision`` with :class:`ScalerGuard`'s promises: the class of mixprec's
    "16-mixed" and "bf16-mixed" objects for Fabric. Subclass it to build a mixed precision of your own.

    Everything else is Lightning's: ``forward_context()`` is ``torch.autocast(device, dtype)``,
    ``backward`` scales the loss when there is a scaler, ``optimizer_step`` steps through it and skips
    a step with inf/NaN gradients; with a scaler it also takes a closure (``optimizer.step(closure)``
    in Fabric), which it runs before the step, returning its result, and refuses LBFGS with a
    :class:`~mixprec.ClosureError`. ``convert_input``/``convert_output`` give the same results as
    Lightning's, faster for a batch of plain containers. ``unscale_gradients`` is
    :class:`ScalerGuard`'s: it unscales for clipping with a fused optimizer too, which Lightning refuses.

    Args:
        precision: "16-mixed" (float16 autocast) or "bf16-mixed" (bfloat16 autocast).
        device: the device type to autocast on, e.g. ``request.device.type``.
        scaler: the GradScaler for "16-mixed", best from :func:`~mixprec.precision.make_scaler`
            (None builds torch's default one for ``device``); None for "bf16-mixed".

    Example:
        A backend's ``create`` building its own subclass::

            from mixprec import PrecisionError, Request
            from mixprec.precision import AutocastPrecision, make_scaler, strategy_family


            class CountingPrecision(AutocastPrecision):
                steps = 0

                def optimizer_step(self, optimizer, **kwargs):
                    self.steps += 1
                    return super().optimizer_step(optimizer, **kwargs)


            def create(request: Request) -> CountingPrecision:
                if request.target != "fabric" or strategy_family(request) is not None:
                    raise PrecisionError("this backend builds objects for Fabric without FSDP only")
                scaler = make_scaler(request) if request.precision == "16-mixed" else None
                return CountingPrecision(request.precision, request.device.type, scaler=scaler)
    """

    @override
    def optimizer_step(self, optimizer: Optimizable, **kwargs: Any) -> Any:
        return _scaled_step(self, optimizer, super().optimizer_step, kwargs)

    @override
    def convert_input(self, data: Any) -> Any:
        return _convert_floating(data, self._desired_input_dtype)

    @override
    def convert_output(self, data: Any) -> Any:
        return _convert_floating(data, torch.get_default_dtype())


class FSDPPrecision(DeviceFSDP, ScalerGuard, LightningFSDPPrecision):
    """Lightning Fabric's ``FSDPPrecision``, for every precision FSDP trains in, on the requested device; with a
    scaler its ``optimizer_step`` takes a closure, as :class:`AutocastPrecision`'s does."""

    @override
    def optimizer_step(self, optimizer: Optimizable, **kwargs: Any) -> Any:
        return _scaled_step(self, optimizer, super().optimizer_step, kwargs)


class FullPrecision(ScalerGuard, Precision):
    """Lightning's "32-true" ``Precision``, refusing scaler state instead of ignoring it."""


class DoubleTruePrecision(ScalerGuard, DoublePrecision):
    """Lightning's ``DoublePrecision`` ("64-true"), refusing scaler state instead of ignoring it."""


class HalfTruePrecision(ScalerGuard, HalfPrecision):
    """Lightning's ``HalfPrecision`` ("16-true", "bf16-true"), refusing scaler state instead of ignoring it."""


def one_device_strategy(device_type: str, index: int | None) -> Any:
    """The strategy a one-device Fabric on ``device_type`` needs passed: None for "cpu", "cuda" and "mps", which
    Lightning places itself; else a ``SingleDeviceStrategy`` on the device (index 0 for None), because Lightning
    puts an accelerator it does not know on a CPU strategy."""
    if device_type in ("cpu", "cuda", "mps"):
        return None
    from lightning.fabric.strategies.single_device import SingleDeviceStrategy

    return SingleDeviceStrategy(device=torch.device(device_type, index or 0))


def mixed_precision(
    precision: str, device: str, scaler: torch.amp.GradScaler | None, strategy: str | None
) -> Precision:
    """Fabric's autocast object; ``strategy`` is "fsdp" or None, as :mod:`mixprec.precision` resolved it."""
    if strategy == "fsdp":
        return FSDPPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]
    return AutocastPrecision(precision, device, scaler=scaler)  # type: ignore[arg-type]


def true_precision(precision: str, device: str, strategy: str | None) -> Precision:
    """Fabric's object without autocast or scaler; ``strategy`` is "fsdp" or None, as :mod:`mixprec.precision`
    resolved it."""
    if strategy == "fsdp":
        return FSDPPrecision(precision, device)
    if precision == "32-true":
        return FullPrecision()
    if precision == "64-true":
        return DoubleTruePrecision()
    return HalfTruePrecision(precision)  # type: ignore[arg-type]
