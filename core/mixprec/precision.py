"""The precision objects mixprec hands out, and the builders backends use to make them.

Every object is a Lightning ``Precision``. Where Lightning's own class behaves right it is used
as it is; the subclasses here change only what Lightning gets wrong for mixprec's purpose:

- the autocast device is the resolved device, never guessed (Lightning's ``FSDPPrecision``
  hard-codes "cuda");
- the GradScaler is built for the resolved device with the options the user passed (Lightning's
  ``FSDPPrecision`` drops a scaler passed to it and builds one for "cuda");
- ``load_state_dict`` never drops scaler state silently: a state that does not fit is an error,
  for the "true" precisions too (Lightning's ignore any state);
- gradient clipping with an optimizer that unscales inside ``step()`` (fused or capturable) is a
  :class:`~mixprec.PrecisionError` that says what to do (Lightning raises ``NotImplementedError``).

A backend's policy calls :func:`mixed_precision` or :func:`true_precision` from its ``create``.
This module imports torch and ``lightning.fabric``; the Trainer's classes are imported only for
``target="trainer"``.
"""

from __future__ import annotations

import difflib
import importlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.precision import (
    DoublePrecision,
    FSDPPrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
)
from lightning.fabric.plugins.precision.utils import _convert_fp_tensor
from lightning_utilities.core.apply_func import apply_to_collection
from torch.optim import Optimizer
from typing_extensions import override

from mixprec._backend import Request
from mixprec._errors import OptionError, PrecisionError, StateDictError

if TYPE_CHECKING:
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

__all__ = [
    "AutocastFSDPPrecision",
    "AutocastPrecision",
    "DeviceFSDP",
    "ScalerGuard",
    "DoubleTruePrecision",
    "FSDPTruePrecision",
    "FullPrecision",
    "HalfTruePrecision",
    "MIXED_DTYPES",
    "SCALER_OPTIONS",
    "TRUE_PRECISIONS",
    "lightning_scaler_ignored",
    "load_scaler_state",
    "make_scaler",
    "mixed_precision",
    "refuse_unscaling_inside_step",
    "served_strategies",
    "true_precision",
]

#: The autocast dtype of each standard mixed precision.
MIXED_DTYPES: Mapping[str, torch.dtype] = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
#: The precisions without autocast or scaler that :func:`true_precision` builds.
TRUE_PRECISIONS = ("32-true", "64-true", "16-true", "bf16-true")
#: Options ``get_precision`` passes to ``torch.amp.GradScaler`` for a precision with a scaler.
SCALER_OPTIONS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
#: What ``GradScaler.state_dict()`` holds for an enabled scaler (torch >= 2.0).
_SCALER_KEYS = frozenset({"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"})
#: Lightning's strategy classes that take an ordinary precision plugin (Fabric and Trainer alike).
_PLAIN_STRATEGY_CLASSES = ("DDPStrategy", "DataParallelStrategy", "SingleDeviceStrategy")


def make_scaler(request: Request) -> torch.amp.GradScaler:
    """A GradScaler for the request's device type, configured from ``request.options``.

    For FSDP it is a ``ShardedGradScaler``, which agrees across ranks on whether to skip a step.
    """
    _check_options(request, SCALER_OPTIONS)
    _check_scaler_values(request.options)
    try:
        if _strategy(request) == "fsdp":
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            return ShardedGradScaler(device=request.device.type, **request.options)
        return torch.amp.GradScaler(request.device.type, **request.options)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"Invalid GradScaler options {dict(request.options)!r}: {exc}") from None


#: Each GradScaler option's valid values, as a test and the words for an error message. torch only
#: asserts some of these (and not at all under ``python -O``), and accepts nonsense for the others.
_SCALER_VALUES: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "init_scale": (lambda v: _is_number(v) and 0 < v < math.inf, "a positive finite number"),
    "growth_factor": (lambda v: _is_number(v) and 1 < v < math.inf, "a finite number greater than 1"),
    "backoff_factor": (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "growth_interval": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive int"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scaler_values(options: Mapping[str, Any]) -> None:
    bad = [
        f"{name}={value!r} (must be {_SCALER_VALUES[name][1]})"
        for name, value in options.items()
        if not _SCALER_VALUES[name][0](value)
    ]
    if bad:
        raise OptionError(f"Invalid GradScaler option(s): {', '.join(bad)}.")


def refuse_unscaling_inside_step(optimizer: Any) -> None:
    """Raise if ``optimizer`` unscales inside its own ``step()``, so its gradients cannot be unscaled first."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        raise PrecisionError(
            f"{type(optimizer).__name__} unscales its gradients inside step() (fused=True or capturable=True),"
            " so they cannot be unscaled for clipping first, and clipping the scaled gradients would be wrong."
            " Create the optimizer without fused/capturable to clip gradients, or do not clip."
        )


def load_scaler_state(scaler: torch.amp.GradScaler | None, state: Any, precision: str) -> None:
    """Load a ``state_dict`` into ``scaler``, or raise StateDictError: never drop state silently."""
    if not isinstance(state, Mapping):
        raise StateDictError(
            f"Cannot load a {type(state).__name__} into a {precision!r} precision: pass the dict that"
            " its state_dict() returned."
        )
    if scaler is None:
        if state:
            raise StateDictError(
                f"This {precision!r} precision has no GradScaler, but the state holds GradScaler state"
                f" (keys {sorted(state)}). It was saved from a precision with a scaler: load it into a"
                " '16-mixed' object, or leave the precision state out of the checkpoint."
            )
        return
    if not state:
        raise StateDictError(
            f"The state is empty, so it holds no GradScaler state for this {precision!r} precision:"
            " it was saved from a precision without a scaler. Load the checkpoint into an object of"
            " that precision, or load nothing and start with a fresh scale."
        )
    missing = sorted(_SCALER_KEYS - set(state))
    if missing:
        raise StateDictError(
            f"The GradScaler state is incomplete: missing {missing}. Pass the whole dict that state_dict() returned."
        )
    scaler.load_state_dict(dict(state))


@contextmanager
def lightning_scaler_ignored() -> Iterator[None]:
    """Silence the warning of the "cuda" ShardedGradScaler that Lightning's ``FSDPPrecision.__init__``
    builds for "16-mixed" on a machine without CUDA: mixprec replaces that scaler right after."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*GradScaler is enabled, but CUDA is not available")
        yield


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


class ScalerGuard:
    """What mixprec adds to a Lightning precision that may carry a GradScaler, Fabric's and the Trainer's.

    ``load_state_dict`` loads the whole scaler state or raises :class:`~mixprec.StateDictError`;
    :meth:`refuse_unscaling` is the check both targets make before unscaling for clipping.
    """

    precision: Any
    device: Any
    scaler: Any

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)

    def refuse_unscaling(self, optimizer: Any) -> None:
        if self.scaler is not None:
            refuse_unscaling_inside_step(optimizer)

    def __repr__(self) -> str:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}(precision={self.precision!r}, device={self.device!r})"
        )


class DeviceFSDP:
    """Lightning's ``FSDPPrecision`` (Fabric's or the Trainer's), autocasting on the requested device with
    the requested scaler: Lightning's hard-codes "cuda" for both."""

    precision: Any

    def __init__(self, precision: Any, device: str, scaler: ShardedGradScaler | None = None) -> None:
        with lightning_scaler_ignored():
            super().__init__(precision)  # type: ignore[call-arg]
        self.device = device
        self.scaler = scaler

    def forward_context(self) -> AbstractContextManager[Any]:
        if self.precision in MIXED_DTYPES:
            return torch.autocast(self.device, dtype=MIXED_DTYPES[self.precision])
        return super().forward_context()  # type: ignore[misc, no-any-return]


class AutocastPrecision(ScalerGuard, MixedPrecision):
    """Lightning Fabric's ``MixedPrecision`` on the device mixprec resolved, with safe state loading."""

    @override
    def unscale_gradients(self, optimizer: Optimizer) -> None:
        self.refuse_unscaling(optimizer)
        super().unscale_gradients(optimizer)

    @override
    def convert_input(self, data: Any) -> Any:
        return _convert_floating(data, self._desired_input_dtype)

    @override
    def convert_output(self, data: Any) -> Any:
        return _convert_floating(data, torch.get_default_dtype())


class AutocastFSDPPrecision(DeviceFSDP, ScalerGuard, FSDPPrecision):
    """Lightning Fabric's ``FSDPPrecision`` with the autocast device and the scaler taken from the request."""

    @override
    def unscale_gradients(self, optimizer: Optimizer) -> None:
        self.refuse_unscaling(optimizer)
        super().unscale_gradients(optimizer)


class _RefusesScalerState:
    """For precisions without a scaler: a GradScaler state handed to ``load_state_dict`` is an error."""

    precision: Any

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(None, state_dict, self.precision)


class FullPrecision(_RefusesScalerState, Precision):
    """Lightning's "32-true" ``Precision``, refusing scaler state instead of ignoring it."""


class DoubleTruePrecision(_RefusesScalerState, DoublePrecision):
    """Lightning's ``DoublePrecision`` ("64-true"), refusing scaler state instead of ignoring it."""


class HalfTruePrecision(_RefusesScalerState, HalfPrecision):
    """Lightning's ``HalfPrecision`` ("16-true", "bf16-true"), refusing scaler state instead of ignoring it."""


class FSDPTruePrecision(_RefusesScalerState, FSDPPrecision):
    """Lightning's ``FSDPPrecision`` for the "true" precisions, refusing scaler state instead of ignoring it."""


def mixed_precision(request: Request, *, scaler: bool) -> Precision:
    """Build the autocast precision for ``request`` ("16-mixed" or "bf16-mixed").

    ``scaler`` says whether the device needs a GradScaler (fp16 does, bf16 does not).
    """
    if request.precision not in MIXED_DTYPES:
        raise PrecisionError(f"mixed_precision() builds {sorted(MIXED_DTYPES)}, not {request.precision!r}.")
    strategy = _strategy(request)
    if not scaler:
        _check_options(request, ())
    grad_scaler = make_scaler(request) if scaler else None
    device = request.device.type
    if request.target == "trainer":
        from mixprec import _trainer

        return _trainer.mixed_precision(request.precision, device, grad_scaler, strategy)
    if strategy == "fsdp":
        return AutocastFSDPPrecision(request.precision, device, scaler=grad_scaler)  # type: ignore[arg-type]
    return AutocastPrecision(request.precision, device, scaler=grad_scaler)  # type: ignore[arg-type]


def true_precision(request: Request) -> Precision:
    """Build the precision for "32-true", "64-true", "16-true" or "bf16-true": no autocast, no scaler."""
    precision = request.precision
    if precision not in TRUE_PRECISIONS:
        raise PrecisionError(f"true_precision() builds {list(TRUE_PRECISIONS)}, not {precision!r}.")
    _check_options(request, ())
    strategy = _strategy(request)
    if strategy == "fsdp" and precision == "64-true":
        raise PrecisionError("FSDP does not train in '64-true'; use '32-true' or a mixed precision.")
    if request.target == "trainer":
        from mixprec import _trainer

        return _trainer.true_precision(precision, strategy)
    if strategy == "fsdp":
        return FSDPTruePrecision(precision)  # type: ignore[arg-type]
    if precision == "32-true":
        return FullPrecision()
    if precision == "64-true":
        return DoubleTruePrecision()
    return HalfTruePrecision(precision)  # type: ignore[arg-type]


def served_strategies(target: str) -> dict[str, str | None]:
    """The strategy names Lightning registers for ``target`` that mixprec builds precisions for.

    Each maps to the precision family it takes: "fsdp" for the FSDP strategies, None for those
    that take an ordinary precision plugin (DDP and its variants, DP, a single device).
    """
    strategies, registered = _lightning_strategies(target)
    plain = tuple(getattr(strategies, name) for name in _PLAIN_STRATEGY_CLASSES if hasattr(strategies, name))
    served: dict[str, str | None] = {"auto": None}
    for name, cls in registered.items():
        if cls is strategies.FSDPStrategy:
            served[name] = "fsdp"
        elif cls in plain:
            served[name] = None
    return served


def _lightning_strategies(target: str) -> tuple[Any, dict[str, type]]:
    """Lightning's strategies package for ``target`` and its registry, as name -> strategy class."""
    package = "lightning.pytorch" if target == "trainer" else "lightning.fabric"
    strategies = importlib.import_module(f"{package}.strategies")
    registry = strategies.StrategyRegistry if target == "trainer" else strategies.STRATEGY_REGISTRY
    return strategies, {name: entry["strategy"] for name, entry in registry.items()}


def _strategy(request: Request) -> str | None:
    name = request.strategy
    if name is None or name == "auto":
        return None
    served = served_strategies(request.target)
    if name in served:
        return served[name]
    names = ", ".join(sorted(served))
    cls = _lightning_strategies(request.target)[1].get(name)
    if cls is not None:
        raise PrecisionError(
            f"mixprec builds no precision for strategy {name!r}: {cls.__name__} works only with Lightning's own"
            " precision class for it, which configures precision through that library and has no autocast device"
            f" for mixprec to choose. Pass the precision to Lightning instead (strategy={name!r},"
            f" precision='bf16-mixed'), or use a strategy mixprec serves: {names}."
        )
    close = difflib.get_close_matches(name, sorted(served), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise PrecisionError(
        f"Unknown strategy {name!r}.{hint} mixprec builds precisions for the strategies {names}; leave"
        " strategy unset for a strategy object that takes an ordinary precision plugin (such as ModelParallelStrategy)."
    )


def _check_options(request: Request, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(request.options) - set(valid))
    if unknown:
        takes = f"takes only {list(valid)}" if valid else "takes no options"
        raise OptionError(
            f"Unknown option(s) {unknown} for {request.precision!r} from backend {request.backend!r}: it {takes}."
        )
