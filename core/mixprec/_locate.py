"""Overflow location: which module first produced a non-finite value (or one about to overflow), in which phase
and at which step.

Off by default, and then nothing here runs: no hook is installed. On, through
``get_precision(..., locate_overflow=True)`` (the object installs the hooks on the model Fabric or the
Trainer hands to ``convert_module``) or the context manager :func:`locate_overflow`, a forward hook on
every module reduces each floating output to its largest absolute value (one reduction and one
device-to-host copy per output) and a gradient hook does the same for the gradient of that output in
backward. Forward hooks fire as each module returns, children before their parents, and gradient hooks
as backward reaches each output, so the first finding is the first module in execution order.

A compiled model or region cannot be watched: the hooks would be traced into the graph, where
reading a value to the host is not possible. That is refused with a
:class:`~mixprec.LocateOverflowError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from mixprec._errors import LocateOverflowError, PrecisionWarning
from mixprec._telemetry import DEFAULT_MARGIN, Overflow, check_margin

__all__ = ["OverflowLocator", "locate_overflow"]

_COMPILED = (
    "the overflow locator cannot watch a compiled model: its hooks read each module's output on the host, which a"
    " compiled graph does not allow. Locate the overflow without torch.compile (the model computes the same), then"
    " compile again."
)


class OverflowLocator:
    """Hooks on every module of ``model`` that record the first module whose output or output gradient is not
    finite, or comes within ``margin`` of its dtype's largest finite value, and warn once when it is found.

    Args:
        model: the model to watch (a Fabric-wrapped or DDP-wrapped one is unwrapped).
        margin: the fraction of the dtype's largest value within which a value counts as about to overflow.
        step: returns the current optimizer step; None counts the model's forward passes instead.

    Raises:
        LocateOverflowError: ``model`` is compiled (``torch.compile``), or this runs inside a compiled region.
    """

    def __init__(self, model: nn.Module, *, margin: float = DEFAULT_MARGIN, step: Callable[[], int] | None = None):
        _refuse_compiling()
        model = _unwrapped(model)
        self.margin = check_margin(margin)
        #: The first finding; None until there is one.
        self.found: Overflow | None = None
        self._step = step
        self._forwards = 0
        self._handles: list[Any] = []
        named: dict[nn.Module, str] = {}
        for name, module in model.named_modules():
            named.setdefault(module, name)
        for module, name in named.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        if step is None:
            self._handles.append(model.register_forward_pre_hook(self._count_forward))

    @property
    def installed(self) -> bool:
        """Whether the hooks are on the model."""
        return bool(self._handles)

    def remove(self) -> None:
        """Take every hook off the model; what was found stays in :attr:`found`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count_forward(self, module: nn.Module, args: Any) -> None:
        self._forwards += 1

    def _current_step(self) -> int:
        return self._step() if self._step is not None else max(0, self._forwards - 1)

    def _forward_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            _refuse_compiling()
            if self.found is not None:
                return
            step = self._current_step()
            for tensor in _tensors(output):
                kind = self._kind(tensor)
                if kind is not None:
                    self._record(Overflow(name, type(module).__name__, "forward", step, *kind))
                    return
                if tensor.requires_grad:
                    tensor.register_hook(self._gradient_hook(name, type(module).__name__, step))  # type: ignore[no-untyped-call]

        return hook

    def _gradient_hook(self, name: str, module_type: str, step: int) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            if self.found is None:
                kind = self._kind(grad)
                if kind is not None:
                    self._record(Overflow(name, module_type, "backward", step, *kind))

        return hook

    def _kind(self, tensor: Tensor) -> tuple[Any, str, float] | None:
        """("inf" | "nan" | "near_max", dtype, largest) for a tensor that overflowed or nearly did; else None."""
        if not tensor.is_floating_point() or tensor.numel() == 0:
            return None
        largest = float(tensor.detach().abs().amax())
        dtype = str(tensor.dtype).removeprefix("torch.")
        if math.isnan(largest):
            return "nan", dtype, largest
        if math.isinf(largest):
            return "inf", dtype, largest
        if largest >= (1.0 - self.margin) * torch.finfo(tensor.dtype).max:
            return "near_max", dtype, largest
        return None

    def _record(self, overflow: Overflow) -> None:
        self.found = overflow
        warnings.warn(
            f"mixprec located an overflow: {overflow}. That module is the first, in execution order, whose values left"
            f" {overflow.dtype}'s range: look at what it computes (a large activation, an exp, a division, a sum"
            " over many elements) and keep it in float32 (torch.autocast(..., enabled=False) around it), scale its"
            " inputs down, or train in 'bf16-mixed' where the hardware has it (bfloat16 has float32's range).",
            PrecisionWarning,
            stacklevel=3,
        )


@contextmanager
def locate_overflow(
    model: nn.Module, precision: Any = None, *, margin: float = DEFAULT_MARGIN
) -> Iterator[OverflowLocator]:
    """Watch ``model`` while the block runs and find the first module whose output or gradient overflows.

    The first module, in execution order, whose forward output or output gradient holds an inf or a NaN, or a
    value within ``margin`` of its dtype's largest finite value, is reported in a
    :class:`~mixprec.PrecisionWarning` and as data in ``locator.found`` (an :class:`~mixprec.Overflow`: its
    qualified name, the phase and the step). With a mixprec ``precision`` object the step is its optimizer
    step, and its ``telemetry.overflow`` and collapse warnings name the module too; without one, the step
    counts the model's forward passes. Every hook is removed when the block ends.

    Example::

        with mixprec.locate_overflow(model, precision) as locator:
            train_a_few_steps()
        print(locator.found)

    Raises:
        LocateOverflowError: the model is compiled, or this is called inside a compiled region.
        OptionError: ``margin`` is not between 0 and 1.
    """
    step = None
    record = getattr(precision, "_telemetry_record", None) if precision is not None else None
    if precision is not None:
        if record is None:
            raise LocateOverflowError(
                f"{type(precision).__name__} records no telemetry, so the locator cannot count its steps: pass an"
                " object built by mixprec.get_precision, or no precision (the step then counts forward passes)."
            )
        step = record.current_step
    locator = OverflowLocator(model, margin=margin, step=step)
    if record is not None:
        record.locators.append(locator)
    try:
        yield locator
    finally:
        locator.remove()
        if record is not None:
            record.locators.remove(locator)


def _refuse_compiling() -> None:
    if torch.compiler.is_compiling():
        raise LocateOverflowError(f"This runs inside a torch.compile'd region: {_COMPILED}")


def _unwrapped(model: nn.Module) -> nn.Module:
    """The user's module inside Fabric's and DDP's wrappers; refused if it, or what runs it, is compiled."""
    for candidate in (model, getattr(model, "_forward_module", None)):
        if isinstance(getattr(candidate, "_orig_mod", None), nn.Module):
            raise LocateOverflowError(f"The model is compiled (torch.compile): {_COMPILED}")
    model = getattr(model, "_original_module", model)
    inner = getattr(model, "module", None)
    if isinstance(model, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module):
        return inner
    return model


def _tensors(output: Any) -> Iterator[Tensor]:
    """The tensors in a module's output: a tensor, or one level of a tuple, list or dict."""
    if isinstance(output, Tensor):
        yield output
    elif isinstance(output, (tuple, list)):
        yield from (item for item in output if isinstance(item, Tensor))
    elif isinstance(output, dict):
        yield from (item for item in output.values() if isinstance(item, Tensor))
