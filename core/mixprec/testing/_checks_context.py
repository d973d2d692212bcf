"""The checks of the context managers: forward_context(), module_init_context(), tensor_init_context(), and teardown().

Each promises to leave torch's global state (:mod:`mixprec.testing._global_state`) as it found it,
on exit and on error, from whatever state it was entered in; forward_context() also promises the
contract's autocast and dtype inside, and that it nests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

from mixprec._contract import Contract
from mixprec.testing._base import CheckFailed, Subject, _autocast, _close, _require, check, compute_dtype
from mixprec.testing._global_state import AUTOCAST_DEPTH, changes, snapshot

_AUTOCAST_FIX = (
    "forward_context() must be torch.autocast(device_type, dtype=...) for an autocast contract, and a context"
    " that changes the default dtype and puts it back for a 'true' one (Lightning's HalfPrecision)"
)


@check()
def forward_autocast(subject: Subject, contract: Contract) -> None:
    """Autocast is on inside forward_context() exactly when the contract autocasts."""
    p = subject.make()
    device_type = subject.device.type
    with p.forward_context():
        enabled = torch.is_autocast_enabled(device_type)
    if contract.autocast:
        _require(
            enabled,
            f"autocast for {device_type!r} is off inside forward_context(); the contract autocasts: {_AUTOCAST_FIX}",
        )
    else:
        _require(
            not enabled,
            f"autocast for {device_type!r} is on inside forward_context(); the contract of {subject.precision!r} does"
            " not autocast: enter no torch.autocast there",
        )


@check()
def forward_dtype(subject: Subject, contract: Contract) -> None:
    """Inside forward_context(), nn.Linear and matmul compute in the contract's compute_dtype."""
    p = subject.make()
    dtype = compute_dtype(contract)
    model = p.convert_module(subject.model())
    x, _ = subject.data
    device_type = subject.device.type
    with p.forward_context():
        out = model(p.convert_input(x))
        if contract.autocast:
            matmul = x @ x.T
            autocast_dtype = torch.get_autocast_dtype(device_type)
    _require(
        out.dtype == dtype,
        f"the model's output inside forward_context() is {out.dtype}; the contract computes in {dtype}:"
        f" {_AUTOCAST_FIX}, and convert_module/convert_input cast to the dtypes of the contract",
    )
    if contract.autocast:
        _require(
            autocast_dtype == dtype,
            f"autocast for {device_type!r} computes in {autocast_dtype}, the contract in {dtype}:"
            f" pass dtype={dtype} to torch.autocast",
        )
        _require(
            matmul.dtype == dtype,
            f"a float32 matmul inside forward_context() returned {matmul.dtype}, the contract computes in {dtype}:"
            f" {_AUTOCAST_FIX}",
        )


@check(applies=_autocast)
def fp32_losses(subject: Subject, contract: Contract) -> None:
    """Inside forward_context(), losses of low-precision activations are computed in float32.

    torch.autocast computes them so wherever its device has the float32 lists: on the CPU and CUDA this
    follows from forward_autocast; it fails for a device whose autocast lacks them, or for an object
    that lowers results itself.
    """
    p = subject.make()
    model = subject.model()
    x, y = subject.data
    targets = torch.arange(x.shape[0], device=subject.torch_device) % 16
    with p.forward_context():
        hidden = model[0](x)
        losses = {
            "mse_loss": F.mse_loss(model(x), y),
            "cross_entropy": F.cross_entropy(hidden, targets),
        }
    for name, loss in losses.items():
        _require(
            loss.dtype == torch.float32,
            f"{name} inside forward_context() returned {loss.dtype}; autocast computes losses in float32:"
            f" {_AUTOCAST_FIX}, and nothing in it lowers the results",
        )


# --- restoring the global state -------------------------------------------------------------------

_UNUSUAL = "under torch.no_grad(), with float64 as the default dtype and autocast's cache off"


def _unusual_state() -> None:
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    torch.set_autocast_cache_enabled(False)


class _Raised(Exception):
    pass


def _left_as_found(
    subject: Subject, context: Callable[[], AbstractContextManager[object]], what: str, *, error: bool
) -> None:
    """Require ``context()`` to leave the global state as it found it, from the suite's state and an unusual one.

    With ``error``, the body raises, and the exception must come out of the context.
    """
    device_type = subject.device.type
    for start in ("as the suite runs", _UNUSUAL):
        if start == _UNUSUAL:
            _unusual_state()  # the case's isolation puts the suite's state back afterwards
        before = snapshot(device_type)
        if error:
            try:
                with context():
                    raise _Raised
            except _Raised:
                pass
            else:
                raise CheckFailed(f"{what} swallowed an exception raised inside it; it must let exceptions through")
        else:
            with context():
                pass
        leaked = changes(before, snapshot(device_type))
        exit = "after an exception inside it" if error else "after it exits"
        _require(
            not leaked,
            f"{what} entered {start}, {exit}: {leaked}. It must put back everything it changes, however it exits"
            " (a context manager whose __exit__ restores, or try/finally around the yield)",
        )


@check()
def forward_context_restores_state(subject: Subject, contract: Contract) -> None:
    """Leaving forward_context() restores torch's global state as it was, whatever it was."""
    p = subject.make()
    _left_as_found(subject, p.forward_context, "forward_context()", error=False)


@check()
def forward_context_restores_state_after_error(subject: Subject, contract: Contract) -> None:
    """An exception inside forward_context() propagates, and torch's global state is restored."""
    p = subject.make()
    _left_as_found(subject, p.forward_context, "forward_context()", error=True)


@check()
def nested_forward_context(subject: Subject, contract: Contract) -> None:
    """forward_context() nests: the inner one changes nothing, and leaving it keeps the outer one in effect."""
    p = subject.make()
    dtype = compute_dtype(contract)
    model = p.convert_module(subject.model())
    x, _ = subject.data
    device_type = subject.device.type
    with p.forward_context():
        outer = snapshot(device_type)
        with p.forward_context():
            # torch.autocast counts how deep it is nested; everything else must stay as the outer context set it.
            inner = changes(outer, snapshot(device_type), ignore=(AUTOCAST_DEPTH,))
            inner_out = model(p.convert_input(x))
        between = changes(outer, snapshot(device_type))
        outer_out = model(p.convert_input(x))
    _require(
        not inner,
        f"a forward_context() nested in another changed: {inner}; inside the outer one it must change nothing",
    )
    _require(
        not between,
        f"leaving a forward_context() nested in another changed: {between}. It must restore the state it found (the"
        " outer context's), not a default: save the state on entry and put that back, as torch.autocast does",
    )
    _require(
        inner_out.dtype == outer_out.dtype == dtype,
        f"outputs are {inner_out.dtype} (nested) and {outer_out.dtype} (outer); the contract computes in {dtype}",
    )


@check(applies=_autocast)
def autocast_cache_cleared(subject: Subject, contract: Contract) -> None:
    """Leaving forward_context() drops autocast's cached casts: the next forward sees weights changed in place."""
    p = subject.make()
    model = p.convert_module(subject.model())
    x, _ = subject.data
    with p.forward_context():
        model(p.convert_input(x))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5)  # as an optimizer step does
    with p.forward_context():
        out = model(p.convert_input(x))
    # A copy has parameters of its own, which no cached cast can stand for.
    with p.forward_context():
        expected = copy.deepcopy(model)(p.convert_input(x))
    _close(
        out.detach(),
        expected.detach(),
        "after the weights changed in place, a forward in a new forward_context() still used the casts of the old"
        " weights: autocast's cache was not dropped on exit. Use torch.autocast, which drops it when the outermost"
        " one exits (setting autocast's flags by hand does not)",
    )


@check()
def init_contexts_restore_state(subject: Subject, contract: Contract) -> None:
    """Leaving module_init_context() or tensor_init_context() restores torch's global state as it was."""
    p = subject.make()
    _left_as_found(subject, p.module_init_context, "module_init_context()", error=False)
    _left_as_found(subject, p.tensor_init_context, "tensor_init_context()", error=False)


@check()
def init_contexts_restore_state_after_error(subject: Subject, contract: Contract) -> None:
    """An exception inside module_init_context() or tensor_init_context() propagates, and the state is restored."""
    p = subject.make()
    _left_as_found(subject, p.module_init_context, "module_init_context()", error=True)
    _left_as_found(subject, p.tensor_init_context, "tensor_init_context()", error=True)


@check()
def teardown_restores_state(subject: Subject, contract: Contract) -> None:
    """An object made, set up on a model (convert_module) and torn down leaves torch's global state as it was."""
    device_type = subject.device.type
    before = snapshot(device_type)
    p = subject.make()
    p.convert_module(subject.model())
    p.teardown()
    leaked = changes(before, snapshot(device_type))
    _require(
        not leaked,
        f"after get_precision, convert_module and teardown(): {leaked}. Whatever the object changes in torch's"
        " global state (when made or when it sets a model up) teardown() must put back",
    )
