"""The precision objects mixprec hands out, and the builders backends use to make them.

Every object is a Lightning ``Precision``. Where Lightning's own class behaves right it is used
as it is; the subclasses here change only what Lightning gets wrong for mixprec's purpose:

- the autocast device is the resolved device, never guessed (Lightning's ``FSDPPrecision``
  hard-codes "cuda");
- the GradScaler is built for the resolved device with the options the user passed;
- ``load_state_dict`` never drops scaler state silently: a state that does not fit is an error;
- gradient clipping with an optimizer that unscales inside ``step()`` (fused or capturable) is a
  clear error rather than a wrong norm.

A backend's policy calls :func:`mixed_precision` or :func:`true_precision` from its ``create``.
This module imports torch and ``lightning.fabric``; the Trainer's classes are imported only for
``target="trainer"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from lightning.fabric.plugins.precision import (
    DoublePrecision,
    FSDPPrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
)
from torch.optim import Optimizer
from typing_extensions import override

from mixprec._backend import Request
from mixprec._errors import OptionError, PrecisionError, StateDictError

__all__ = [
    "AutocastFSDPPrecision",
    "AutocastPrecision",
    "MIXED_DTYPES",
    "SCALER_OPTIONS",
    "STRATEGIES",
    "check_unscalable",
    "load_scaler_state",
    "make_scaler",
    "mixed_precision",
    "true_precision",
]

#: The autocast dtype of each standard mixed precision.
MIXED_DTYPES: Mapping[str, torch.dtype] = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
#: Options ``get_precision`` passes to ``torch.amp.GradScaler`` for a precision with a scaler.
SCALER_OPTIONS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
#: Strategy names that need no precision class of their own, and those that do.
PLAIN_STRATEGIES = frozenset({"auto", "single_device", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "dp"})
STRATEGIES = (*sorted(PLAIN_STRATEGIES), "fsdp")
_SCALER_KEYS = frozenset({"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"})


def make_scaler(request: Request) -> torch.amp.GradScaler:
    """A GradScaler for the request's device type, configured from ``request.options``."""
    _check_options(request, SCALER_OPTIONS)
    try:
        if request.strategy == "fsdp":
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            return ShardedGradScaler(device=request.device.type, **request.options)
        return torch.amp.GradScaler(request.device.type, **request.options)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"Invalid GradScaler options {dict(request.options)!r}: {exc}") from None


def check_unscalable(optimizer: Optimizer) -> None:
    """Refuse to unscale for an optimizer that unscales inside its own ``step()``."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        raise PrecisionError(
            f"{type(optimizer).__name__} unscales its gradients inside step() (a fused or capturable"
            " optimizer), so the gradients cannot be unscaled for clipping first: clipping now would use"
            " scaled gradients and be wrong. Create the optimizer without fused=True/capturable=True"
            " to clip, or do not clip."
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


class AutocastPrecision(MixedPrecision):
    """Lightning Fabric's ``MixedPrecision`` on the device mixprec resolved, with safe state loading."""

    @override
    def unscale_gradients(self, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            check_unscalable(optimizer)
            self.scaler.unscale_(optimizer)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r})"


class AutocastFSDPPrecision(FSDPPrecision):
    """Lightning Fabric's ``FSDPPrecision`` with the autocast device taken from the request."""

    def __init__(self, precision: Any, device: str, scaler: Any = None) -> None:
        super().__init__(precision, scaler=scaler)
        self.device = device

    @override
    def forward_context(self) -> AbstractContextManager[Any]:
        if "mixed" in self.precision:
            return torch.autocast(self.device, dtype=MIXED_DTYPES[self.precision])
        return super().forward_context()

    @override
    def unscale_gradients(self, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            check_unscalable(optimizer)
            self.scaler.unscale_(optimizer)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        load_scaler_state(self.scaler, state_dict, self.precision)


def mixed_precision(request: Request, *, scaler: bool) -> Precision:
    """Build the autocast precision for ``request`` ("16-mixed" or "bf16-mixed").

    ``scaler`` says whether the device needs a GradScaler (fp16 does, bf16 does not).
    """
    if request.precision not in MIXED_DTYPES:
        raise PrecisionError(f"mixed_precision() builds {sorted(MIXED_DTYPES)}, not {request.precision!r}.")
    grad_scaler = make_scaler(request) if scaler else None
    if not scaler:
        _check_options(request, ())
    strategy = _strategy(request)
    device = request.device.type
    if request.target == "trainer":
        from mixprec import _trainer

        return _trainer.mixed_precision(request.precision, device, grad_scaler, strategy)
    if strategy == "fsdp":
        return AutocastFSDPPrecision(request.precision, device, scaler=grad_scaler)
    return AutocastPrecision(request.precision, device, scaler=grad_scaler)  # type: ignore[arg-type]


def true_precision(request: Request) -> Precision:
    """Build the precision for "32-true", "64-true", "16-true" or "bf16-true": no autocast, no scaler."""
    _check_options(request, ())
    strategy = _strategy(request)
    precision = request.precision
    if precision not in ("32-true", "64-true", "16-true", "bf16-true"):
        raise PrecisionError(f"true_precision() does not build {precision!r}.")
    if request.target == "trainer":
        from mixprec import _trainer

        return _trainer.true_precision(precision, strategy)
    if strategy == "fsdp":
        if precision == "64-true":
            raise PrecisionError("FSDP does not train in '64-true'; use '32-true' or a mixed precision.")
        return FSDPPrecision(precision)  # type: ignore[arg-type]
    if precision == "32-true":
        return Precision()
    if precision == "64-true":
        return DoublePrecision()
    return HalfPrecision(precision)  # type: ignore[arg-type]


def _strategy(request: Request) -> str | None:
    strategy = request.strategy
    if strategy is None or strategy in PLAIN_STRATEGIES:
        return None
    if strategy == "fsdp":
        return strategy
    raise PrecisionError(
        f"Unknown strategy {strategy!r}: mixprec builds precisions for {list(STRATEGIES)};"
        " leave strategy unset for any strategy that takes an ordinary precision plugin."
    )


def _check_options(request: Request, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(request.options) - set(valid))
    if unknown:
        takes = f"takes only {list(valid)}" if valid else "takes no options"
        raise OptionError(
            f"Unknown option(s) {unknown} for {request.precision!r} from backend {request.backend!r}: it {takes}."
        )
