"""The checks: each one behaviour a precision object promises, tested on real tensors on the device.

A check is a function of a :class:`Subject` (one precision of one backend on one device) and the
precision's :class:`~mixprec.testing._contract.Contract`. It passes by returning, fails by raising
:class:`CheckFailed` with a message that says what was expected and what happened, and may raise
:class:`CheckSkipped` for a reason found only while running. Any other exception is a failure too.

Every check builds its own precision objects (``get_precision`` returns a new one per call, which is
itself checked), so checks never see each other's scaler state. What they share depends on the device
alone and is built once per process: a tiny model (8-16-1, so that emulated float16 on a CPU stays
fast), its data, and the loss float32 training reaches. A check named after a behaviour tests that
behaviour and as little else as it can, so that a defect shows up under its own name.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import warnings
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric.plugins.precision import Precision
from torch import Tensor, nn

import mixprec
from mixprec._backend import Availability, Backend, Device
from mixprec._errors import PrecisionWarning, StateDictError
from mixprec.testing._contract import CONTRACTS, SCALER_OPTIONS, Contract

__all__ = ["CHECKS", "Check", "CheckFailed", "CheckSkipped", "Subject", "isolated"]

_LR = 0.2
_TRAINING_STEPS = 30


class CheckFailed(Exception):
    """A check found the backend breaking its promise; the message says how."""


class CheckSkipped(Exception):
    """A check cannot run here; the message says why."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def _close(actual: Any, expected: Any, what: str) -> None:
    """Require tensors equal within the tolerance torch uses for their dtype."""
    try:
        torch.testing.assert_close(actual, expected)
    except AssertionError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckFailed(f"{what}: {detail}") from None


class Subject:
    """One precision of one backend on one device: what all of its checks share.

    Args:
        backend: the backend's description.
        device: the device the suite runs on.
        precision: the precision under test.
        availability: what the backend's policy says of the precision on the device.
    """

    def __init__(self, backend: Backend, device: Device, precision: str, availability: Availability) -> None:
        self.backend = backend
        self.device = device
        self.precision = precision
        self.availability = availability
        #: What the precision promises; None for a precision the suite has no contract for.
        self.contract = CONTRACTS.get(precision)

    def make(self, **options: Any) -> Precision:
        """A new object from ``get_precision``; a precision with a GradScaler gets :data:`SCALER_OPTIONS`."""
        if self.contract is not None and self.contract.scaler:
            options = {**SCALER_OPTIONS, **options}
        with warnings.catch_warnings():
            # "slow" precisions warn on every call; the suite checks them all the same.
            warnings.simplefilter("ignore", PrecisionWarning)
            return mixprec.get_precision(
                self.precision, str(self.device), backend=self.backend.name, target="fabric", **options
            )

    @functools.cached_property
    def torch_device(self) -> torch.device:
        return torch.device(str(self.device))

    def model(self) -> nn.Sequential:
        """A fresh float32 copy of the suite's model on the device, always with the same weights."""
        return copy.deepcopy(_template()).to(self.torch_device)

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        """Inputs and regression targets (a fixed teacher network's outputs), float32, on the device."""
        return _data(str(self.device))

    @property
    def reference_losses(self) -> tuple[float, float]:
        """The float32 loss of the suite's model before and after training it in float32 without any plugin."""
        return _reference_losses(str(self.device))

    def evaluate(self, model: nn.Module) -> float:
        """The loss of ``model`` computed in float32, whatever the dtype it trained in."""
        return _evaluate(model, str(self.device))


# The model, the data and the float32 reference depend on the device alone: built once per process.


@functools.cache
def _template() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16, dtype=torch.float32), nn.Tanh(), nn.Linear(16, 1, dtype=torch.float32))


@functools.cache
def _data(device: str) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=generator, dtype=torch.float32)
    y = torch.tanh(x @ torch.randn(8, 1, generator=generator, dtype=torch.float32))
    return x.to(device), y.to(device)


@functools.cache
def _reference_losses(device: str) -> tuple[float, float]:
    model = copy.deepcopy(_template()).to(device)
    before = _evaluate(model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    x, y = _data(device)
    for _ in range(_TRAINING_STEPS):
        optimizer.zero_grad()
        torch.autograd.backward(F.mse_loss(model(x), y))
        optimizer.step()
    return before, _evaluate(model, device)


def _evaluate(model: nn.Module, device: str) -> float:
    x, y = _data(device)
    with torch.no_grad():
        return float(F.mse_loss(copy.deepcopy(model).float()(x), y))


@dataclass(frozen=True)
class Check:
    """One named check, the contracts it applies to, and the optional capability it needs."""

    name: str
    function: Callable[[Subject, Contract], None]
    applies: Callable[[Contract], bool]
    capability: str | None = None

    @property
    def summary(self) -> str:
        """The first line of the check's docstring: what it promises."""
        return (self.function.__doc__ or "").strip().splitlines()[0]


_REGISTERED: list[Check] = []


def _always(contract: Contract) -> bool:
    return True


def _autocast(contract: Contract) -> bool:
    return contract.autocast


def _scaler(contract: Contract) -> bool:
    return contract.scaler


def _no_scaler(contract: Contract) -> bool:
    return not contract.scaler


def _wide_parameters(contract: Contract) -> bool:
    # torch's fused CPU kernels disagree with the unfused ones on float16/bfloat16 parameters (torch 2.13: a
    # fused SGD step barely moves them), which is torch's business, not the backend's.
    return contract.parameter_dtype in (torch.float32, torch.float64)


def _check(
    applies: Callable[[Contract], bool] = _always, capability: str | None = None
) -> Callable[[Callable[[Subject, Contract], None]], Callable[[Subject, Contract], None]]:
    def register(function: Callable[[Subject, Contract], None]) -> Callable[[Subject, Contract], None]:
        _REGISTERED.append(Check(function.__name__, function, applies, capability))
        return function

    return register


# --- state that forward_context() may change, and its restoration -------------------------------


def _state(device_type: str) -> tuple[bool, torch.dtype, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type), torch.get_default_dtype()


@contextmanager
def isolated(device_type: str) -> Iterator[None]:
    """Restore autocast and the default dtype after a check, so a leaking backend fails one check only."""
    enabled, dtype, default = _state(device_type)
    try:
        yield
    finally:
        torch.set_autocast_enabled(device_type, enabled)
        torch.set_autocast_dtype(device_type, dtype)
        torch.set_default_dtype(default)


def _describe(state: tuple[bool, torch.dtype, torch.dtype]) -> str:
    enabled, dtype, default = state
    return f"autocast {'on' if enabled else 'off'} ({dtype}), default dtype {default}"


# --- the object ---------------------------------------------------------------------------------


@_check()
def is_lightning_precision(subject: Subject, contract: Contract) -> None:
    """The object is a lightning.fabric.plugins.precision.Precision."""
    p = subject.make()
    _require(
        isinstance(p, Precision),
        f"get_precision returned {type(p).__name__}, which is not a lightning.fabric.plugins.precision.Precision",
    )


@_check()
def matches_request(subject: Subject, contract: Contract) -> None:
    """precision, device and scaler are those of the request."""
    p = subject.make()
    _require(p.precision == contract.precision, f"precision is {p.precision!r}, not {contract.precision!r}")
    scaler = getattr(p, "scaler", None)
    if contract.scaler:
        if not isinstance(scaler, torch.amp.GradScaler):
            raise CheckFailed(
                f"scaler is {scaler!r}: {contract.precision!r} needs a torch.amp.GradScaler for loss scaling"
            )
        _require(scaler.is_enabled(), "the GradScaler is disabled, so it neither scales nor skips steps")
        scaler_device = getattr(scaler, "_device", None)
        _require(
            scaler_device == subject.device.type,
            f"the GradScaler is for device {scaler_device!r}, not {subject.device.type!r}",
        )
    else:
        _require(scaler is None, f"scaler is {scaler!r}: {contract.precision!r} uses no GradScaler")
    if contract.autocast:
        device = getattr(p, "device", None)
        _require(
            device == subject.device.type,
            f"device is {device!r}: autocast must run on device type {subject.device.type!r}",
        )


@_check()
def new_object_per_call(subject: Subject, contract: Contract) -> None:
    """Each call returns a new object, and no two objects share a GradScaler."""
    a, b = subject.make(), subject.make()
    _require(a is not b, "two calls to get_precision returned the same object")
    if contract.scaler:
        _require(
            getattr(a, "scaler", None) is not getattr(b, "scaler", None),
            "two objects share one GradScaler: the scale and its skipped steps leak from one training run to another",
        )


# --- forward_context ----------------------------------------------------------------------------


@_check()
def forward_autocast(subject: Subject, contract: Contract) -> None:
    """Autocast is on inside forward_context() exactly when the precision is a mixed one."""
    p = subject.make()
    device_type = subject.device.type
    with p.forward_context():
        enabled = torch.is_autocast_enabled(device_type)
    if contract.autocast:
        _require(enabled, f"autocast is not enabled for {device_type!r} inside forward_context()")
    else:
        _require(not enabled, f"autocast is enabled for {device_type!r} inside forward_context() of a 'true' precision")


@_check()
def forward_dtype(subject: Subject, contract: Contract) -> None:
    """Inside forward_context(), nn.Linear and matmul compute in the precision's dtype."""
    p = subject.make()
    model = p.convert_module(subject.model())
    x, _ = subject.data
    device_type = subject.device.type
    with p.forward_context():
        out = model(p.convert_input(x))
        if contract.autocast:
            matmul = x @ x.T
            autocast_dtype = torch.get_autocast_dtype(device_type)
    _require(out.dtype == contract.dtype, f"the model's output is {out.dtype}, not {contract.dtype}")
    if contract.autocast:
        _require(
            autocast_dtype == contract.dtype,
            f"autocast for {device_type!r} computes in {autocast_dtype}, not {contract.dtype}",
        )
        _require(matmul.dtype == contract.dtype, f"a float32 matmul returned {matmul.dtype}, not {contract.dtype}")


@_check(applies=_autocast)
def fp32_losses(subject: Subject, contract: Contract) -> None:
    """Inside forward_context(), losses of low-precision activations are computed in float32."""
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
        _require(loss.dtype == torch.float32, f"{name} returned {loss.dtype}; autocast computes it in float32")


@_check()
def autocast_restored(subject: Subject, contract: Contract) -> None:
    """Leaving forward_context() restores autocast and the default dtype as they were."""
    p = subject.make()
    before = _state(subject.device.type)
    with p.forward_context():
        pass
    after = _state(subject.device.type)
    _require(after == before, f"before forward_context(): {_describe(before)}; after it: {_describe(after)}")


class _Raised(Exception):
    pass


@_check()
def autocast_restored_after_error(subject: Subject, contract: Contract) -> None:
    """An exception inside forward_context() propagates, and autocast and the default dtype are restored."""
    p = subject.make()
    before = _state(subject.device.type)
    try:
        with p.forward_context():
            raise _Raised
    except _Raised:
        pass
    else:
        raise CheckFailed("forward_context() swallowed an exception raised inside it")
    after = _state(subject.device.type)
    _require(
        after == before, f"before forward_context(): {_describe(before)}; after an exception inside: {_describe(after)}"
    )


@_check()
def nested_forward_context(subject: Subject, contract: Contract) -> None:
    """forward_context() nests: the inner one changes nothing, and leaving it keeps the outer one in effect."""
    p = subject.make()
    model = p.convert_module(subject.model())
    x, _ = subject.data
    device_type = subject.device.type
    before = _state(device_type)
    with p.forward_context():
        outer = _state(device_type)
        with p.forward_context():
            inner = _state(device_type)
            inner_out = model(p.convert_input(x))
        between = _state(device_type)
        outer_out = model(p.convert_input(x))
    after = _state(device_type)
    _require(inner == outer, f"outer forward_context(): {_describe(outer)}; nested inside it: {_describe(inner)}")
    _require(
        between == outer,
        f"outer forward_context(): {_describe(outer)}; after a nested one exits: {_describe(between)}",
    )
    _require(
        inner_out.dtype == outer_out.dtype == contract.dtype,
        f"outputs are {inner_out.dtype} (nested) and {outer_out.dtype} (outer), not {contract.dtype}",
    )
    _require(after == before, f"before: {_describe(before)}; after the outer forward_context(): {_describe(after)}")


# --- convert_input / convert_output -------------------------------------------------------------

_Pair = namedtuple("_Pair", ["features", "label"])


@dataclass
class _Batch:
    inputs: Tensor
    lengths: Tensor
    name: str


def _sample(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A nested batch: floating tensors of ``dtype`` and float64, integer and bool tensors, and plain values."""

    def floats(*shape: int) -> Tensor:
        return torch.linspace(-2, 2, math.prod(shape), device=device).reshape(shape).to(dtype)

    ints = torch.arange(6, device=device)
    return {
        "x": floats(2, 3),
        "double": floats(3).double(),
        "ids": ints,
        "mask": ints > 2,
        "nested": [floats(2), (floats(1, 2), ints.int()), _Pair(floats(3), ints)],
        "batch": _Batch(floats(2, 2), ints.clone(), "batch-0"),
        "lr": 0.5,
        "tag": "text",
        "none": None,
    }


def _leaves(original: Any, converted: Any, path: str = "data") -> Iterator[tuple[str, Any, Any]]:
    """Walk two collections side by side, requiring the same structure; yield the leaves' pairs."""
    _require(
        type(converted) is type(original),
        f"{path} is a {type(converted).__name__}, not a {type(original).__name__} like the input",
    )
    if isinstance(original, dict):
        _require(list(converted) == list(original), f"{path} has keys {list(converted)}, not {list(original)}")
        for key in original:
            yield from _leaves(original[key], converted[key], f"{path}[{key!r}]")
    elif isinstance(original, (list, tuple)):
        _require(len(converted) == len(original), f"{path} has {len(converted)} items, not {len(original)}")
        for i, (a, b) in enumerate(zip(original, converted, strict=True)):
            yield from _leaves(a, b, f"{path}[{i}]")
    elif is_dataclass(original):
        for field in fields(original):
            yield from _leaves(getattr(original, field.name), getattr(converted, field.name), f"{path}.{field.name}")
    else:
        yield path, original, converted


def _check_converted(original: Any, converted: Any, float_dtype: Callable[[Tensor], torch.dtype]) -> None:
    for path, before, after in _leaves(original, converted):
        if not isinstance(before, Tensor):
            _require(after == before, f"{path} was {before!r} and became {after!r}; non-tensors stay untouched")
            continue
        if torch.is_floating_point(before):
            expected = float_dtype(before)
            _require(after.dtype == expected, f"{path} is {after.dtype}, not {expected} (it was {before.dtype})")
            _require(after.device == before.device, f"{path} moved from {before.device} to {after.device}")
            _close(after.double(), before.double().to(expected).double(), f"{path} changed its values")
        else:
            _require(
                after.dtype == before.dtype,
                f"{path} was {before.dtype} and became {after.dtype}; integer and bool tensors stay untouched",
            )
            _require(torch.equal(after, before), f"{path} changed its values; integer and bool tensors stay untouched")


@_check()
def convert_input(subject: Subject, contract: Contract) -> None:
    """convert_input casts the floating tensors of nested dicts, lists, tuples, namedtuples and dataclasses."""
    p = subject.make()
    data = _sample(subject.torch_device, torch.float32)
    converted = p.convert_input(data)
    if contract.converts_io:
        _check_converted(data, converted, lambda tensor: contract.dtype)
    else:
        _check_converted(data, converted, lambda tensor: tensor.dtype)


@_check()
def convert_output(subject: Subject, contract: Contract) -> None:
    """convert_output casts floating tensors back to the default dtype; everything else stays untouched."""
    p = subject.make()
    data = _sample(subject.torch_device, contract.dtype)
    converted = p.convert_output(data)
    if contract.converts_io:
        _check_converted(data, converted, lambda tensor: torch.get_default_dtype())
    else:
        _check_converted(data, converted, lambda tensor: tensor.dtype)


@_check()
def parameter_dtype(subject: Subject, contract: Contract) -> None:
    """convert_module, module_init_context and tensor_init_context give parameters of the precision's dtype."""
    p = subject.make()
    expected = contract.parameter_dtype
    model = p.convert_module(subject.model())
    dtypes = {param.dtype for param in model.parameters()}
    _require(
        dtypes == {expected}, f"after convert_module the parameters are {sorted(map(str, dtypes))}, not {expected}"
    )
    with p.module_init_context():
        layer = nn.Linear(2, 2)
    _require(
        layer.weight.dtype == expected, f"under module_init_context a layer is {layer.weight.dtype}, not {expected}"
    )
    with p.tensor_init_context():
        tensor = torch.empty(1)
    _require(tensor.dtype == expected, f"under tensor_init_context a tensor is {tensor.dtype}, not {expected}")


# --- backward and optimizer_step ----------------------------------------------------------------


def _loss(model: nn.Module, subject: Subject) -> Tensor:
    """The suite's loss of ``model``, computed without the plugin in the parameters' dtype, so it is exact."""
    x, y = subject.data
    dtype = next(model.parameters()).dtype
    return F.mse_loss(model(x.to(dtype)), y.to(dtype))


def _true_gradients(model: nn.Module, subject: Subject) -> list[Tensor]:
    return list(torch.autograd.grad(_loss(model, subject), list(model.parameters())))


def _sgd_step(model: nn.Module, gradients: list[Tensor]) -> list[Tensor]:
    """The weights one SGD step with ``gradients`` gives, computed by torch's own SGD on a copy."""
    copied = copy.deepcopy(model)
    for param, grad in zip(copied.parameters(), gradients, strict=True):
        param.grad = grad.clone()
    torch.optim.SGD(copied.parameters(), lr=_LR).step()
    return _weights(copied)


def _weights(model: nn.Module) -> list[Tensor]:
    return [param.detach().clone() for param in model.parameters()]


def _changed(before: list[Tensor], model: nn.Module) -> int:
    """How many of ``model``'s parameter tensors differ, in any bit, from ``before``."""
    return sum(not torch.equal(a, b) for a, b in zip(before, _weights(model), strict=True))


def _poison(model: nn.Module, value: float) -> None:
    """Put ``value`` (inf or NaN) into the first gradient, as an overflow in backward would."""
    grad = next(model.parameters()).grad
    if grad is None:
        raise CheckFailed("backward() left the parameters without gradients")
    grad.view(-1)[0] = value


def _scale(p: Precision) -> float:
    scaler = getattr(p, "scaler", None)
    if not isinstance(scaler, torch.amp.GradScaler):
        raise CheckFailed(f"scaler is {scaler!r}, not a torch.amp.GradScaler")
    return float(scaler.get_scale())


@_check()
def step_applied(subject: Subject, contract: Contract) -> None:
    """backward() then optimizer_step() applies every step with finite gradients, with the true gradients."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    for step in range(3):
        expected = _sgd_step(model, _true_gradients(model, subject))
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        p.optimizer_step(optimizer)
        _close(_weights(model), expected, f"the weights after step {step + 1} are not those of an SGD step")


@_check(applies=_scaler)
def loss_scaled(subject: Subject, contract: Contract) -> None:
    """backward() multiplies the loss by the GradScaler's scale."""
    p = subject.make()
    model = p.convert_module(subject.model())
    true = _true_gradients(model, subject)
    p.backward(_loss(model, subject), model)
    scale = _scale(p)
    got = [param.grad for param in model.parameters()]
    _require(all(g is not None for g in got), "backward() left parameters without gradients")
    ratio = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in got if g is not None]))) / float(
        torch.linalg.vector_norm(torch.cat([g.flatten() for g in true]))
    )
    _require(
        math.isclose(ratio, scale, rel_tol=1e-3),
        f"after backward() the gradients are {ratio:g} times the true ones; the loss must be scaled by {scale:g}",
    )


@_check(applies=_scaler)
def nonfinite_step_skipped(subject: Subject, contract: Contract) -> None:
    """optimizer_step() skips a step whose gradients hold inf or NaN: weights and optimizer state untouched."""
    for bad in (math.inf, math.nan):
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        p.backward(_loss(model, subject), model)
        _poison(model, bad)
        before = _weights(model)
        p.optimizer_step(optimizer)
        changed = _changed(before, model)
        _require(changed == 0, f"a step with a {bad} gradient changed {changed} parameter tensors; it must be skipped")
        _require(not optimizer.state, f"a step with a {bad} gradient updated the optimizer's state; it must be skipped")


@_check(applies=_scaler)
def scale_backoff(subject: Subject, contract: Contract) -> None:
    """After a step with inf gradients, the scale is multiplied by backoff_factor."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    p.backward(_loss(model, subject), model)
    _poison(model, math.inf)
    p.optimizer_step(optimizer)
    expected = float(SCALER_OPTIONS["init_scale"]) * float(SCALER_OPTIONS["backoff_factor"])
    _require(_scale(p) == expected, f"after a step with inf gradients the scale is {_scale(p):g}, not {expected:g}")


@_check(applies=_scaler)
def scale_growth(subject: Subject, contract: Contract) -> None:
    """The scale grows by growth_factor after growth_interval finite steps, and not before."""
    interval = 2
    p = subject.make(growth_interval=interval)
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    init = float(SCALER_OPTIONS["init_scale"])
    for step in range(1, interval + 1):
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        p.optimizer_step(optimizer)
        expected = init * float(SCALER_OPTIONS["growth_factor"]) if step == interval else init
        _require(
            _scale(p) == expected,
            f"with growth_interval={interval}, the scale after {step} finite step(s) is {_scale(p):g},"
            f" not {expected:g}",
        )


@_check(applies=_scaler)
def unscale_before_clipping(subject: Subject, contract: Contract) -> None:
    """unscale_gradients() before clipping gives the true gradient norm, and the step uses the clipped gradients."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    true = _true_gradients(model, subject)
    true_norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in true])))
    max_norm = true_norm / 2
    expected = _sgd_step(model, [g * (max_norm / (true_norm + 1e-6)) for g in true])
    p.backward(_loss(model, subject), model)
    p.unscale_gradients(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    _require(
        math.isclose(norm, true_norm, rel_tol=1e-4),
        f"after unscale_gradients() the gradient norm is {norm:g}, not the true norm {true_norm:g}",
    )
    p.optimizer_step(optimizer)
    _close(_weights(model), expected, "the step after clipping did not apply the clipped, unscaled gradients")


@_check(applies=_scaler)
def lbfgs_rejected_with_scaler(subject: Subject, contract: Contract) -> None:
    """optimizer_step() refuses LBFGS when there is a GradScaler (it cannot step a closure), as Lightning does."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=2)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _loss(model, subject)
        p.backward(loss, model)
        return loss

    before = _weights(model)
    try:
        p.optimizer_step(optimizer, closure=closure)  # type: ignore[arg-type]  # LBFGS.step is untyped
    except Exception:
        pass
    else:
        raise CheckFailed("optimizer_step() stepped LBFGS through a GradScaler instead of raising an error")
    changed = _changed(before, model)
    _require(changed == 0, f"the refused LBFGS step still changed {changed} parameter tensors")


@_check(applies=_no_scaler, capability="lbfgs_closure")
def lbfgs_closure(subject: Subject, contract: Contract) -> None:
    """optimizer_step(optimizer, closure=...) runs the closure, and LBFGS lowers the loss."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    x, y = subject.data
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        calls += 1
        optimizer.zero_grad()
        with p.forward_context():
            out = model(p.convert_input(x))
        loss = F.mse_loss(p.convert_output(out), y)
        p.backward(loss, model)
        return loss

    before = subject.evaluate(model)
    p.optimizer_step(optimizer, closure=closure)  # type: ignore[arg-type]  # LBFGS.step is untyped
    _require(calls > 0, "optimizer_step() never called the closure")
    after = subject.evaluate(model)
    _require(after < before, f"an LBFGS step through optimizer_step() took the loss from {before:g} to {after:g}")


@_check(applies=_wide_parameters, capability="fused_optimizers")
def fused_optimizers(subject: Subject, contract: Contract) -> None:
    """A fused SGD steps like the unfused one, and skips a step with inf gradients where there is a GradScaler."""
    results = []
    for fused in (True, False):
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(model.parameters(), lr=_LR, momentum=0.9, fused=fused)
        for _ in range(2):
            optimizer.zero_grad()
            p.backward(_loss(model, subject), model)
            p.optimizer_step(optimizer)
        results.append(_weights(model))
    _close(results[0], results[1], "two fused SGD steps differ from two unfused ones")
    if contract.scaler:
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(model.parameters(), lr=_LR, momentum=0.9, fused=True)
        p.backward(_loss(model, subject), model)
        _poison(model, math.inf)
        before = _weights(model)
        p.optimizer_step(optimizer)
        changed = _changed(before, model)
        _require(changed == 0, f"a fused step with an inf gradient changed {changed} parameter tensors")


# --- state_dict ---------------------------------------------------------------------------------


def _used(subject: Subject, contract: Contract) -> Precision:
    """An object whose scaler state differs from a fresh one's in every key: growth settings of its own, a
    skipped step (the scale) and a finite step (the growth tracker)."""
    p = subject.make(growth_interval=3, growth_factor=4.0, backoff_factor=0.25) if contract.scaler else subject.make()
    if contract.scaler:
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        for bad in (math.inf, None):
            optimizer.zero_grad()
            p.backward(_loss(model, subject), model)
            if bad is not None:
                _poison(model, bad)
            p.optimizer_step(optimizer)
    return p


def _scaler_state(p: Precision) -> dict[str, Any]:
    scaler = getattr(p, "scaler", None)
    return {} if scaler is None else dict(scaler.state_dict())


@_check()
def state_dict_complete(subject: Subject, contract: Contract) -> None:
    """state_dict() holds the GradScaler's whole state, and is empty without a scaler."""
    p = _used(subject, contract)
    state = p.state_dict()
    _require(isinstance(state, dict), f"state_dict() returned a {type(state).__name__}, not a dict")
    expected = _scaler_state(p)
    missing = sorted(set(expected) - set(state))
    _require(not missing, f"state_dict() lacks the GradScaler's {missing}")
    _require(state == expected, f"state_dict() is {state!r}; the GradScaler's state is {expected!r}")


@_check()
def load_state_dict_restores(subject: Subject, contract: Contract) -> None:
    """load_state_dict() of a state_dict() restores the whole scaler state in a fresh object."""
    p = _used(subject, contract)
    fresh = subject.make()
    fresh.load_state_dict(p.state_dict())
    _require(
        _scaler_state(fresh) == _scaler_state(p),
        f"after load_state_dict() the GradScaler holds {_scaler_state(fresh)!r}, not {_scaler_state(p)!r}",
    )


@_check()
def state_dict_torch_save(subject: Subject, contract: Contract) -> None:
    """A state_dict() saved with torch.save and read back with torch.load restores the whole scaler state."""
    p = _used(subject, contract)
    buffer = io.BytesIO()
    torch.save(p.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = subject.make()
    fresh.load_state_dict(loaded)
    _require(
        _scaler_state(fresh) == _scaler_state(p),
        f"after torch.save, torch.load and load_state_dict() the GradScaler holds {_scaler_state(fresh)!r},"
        f" not {_scaler_state(p)!r}",
    )


@_check()
def incompatible_state_dict(subject: Subject, contract: Contract) -> None:
    """load_state_dict() of a state that does not fit raises mixprec.StateDictError and changes nothing."""
    if contract.scaler:
        bad_states: list[Any] = [{}, {"scale": 2.0}, ["not", "a", "dict"]]
    else:
        bad_states = [dict(torch.amp.GradScaler("cpu", init_scale=8.0).state_dict())]
    for bad in bad_states:
        p = subject.make()
        before = _scaler_state(p)
        try:
            p.load_state_dict(bad)
        except StateDictError as exc:
            _require(bool(str(exc)), f"load_state_dict({bad!r}) raised a StateDictError without a message")
        except Exception as exc:
            raise CheckFailed(
                f"load_state_dict({bad!r}) raised {type(exc).__name__}: {exc}; expected mixprec.StateDictError"
            ) from None
        else:
            raise CheckFailed(f"load_state_dict({bad!r}) accepted a state that does not fit a {contract.precision!r}")
        _require(_scaler_state(p) == before, f"the refused load_state_dict({bad!r}) still changed the GradScaler")


# --- training -----------------------------------------------------------------------------------


@_check()
def training_matches_fp32(subject: Subject, contract: Contract) -> None:
    """A small model trained under the precision ends with a loss close to the same model trained in float32."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    x, y = subject.data
    for _ in range(_TRAINING_STEPS):
        optimizer.zero_grad()
        with p.forward_context():
            out = model(p.convert_input(x))
        loss = F.mse_loss(p.convert_output(out), y)
        p.backward(loss, model)
        p.optimizer_step(optimizer)
    start, reference = subject.reference_losses
    got = subject.evaluate(model)
    _require(
        abs(got - reference) <= contract.training_rtol * reference,
        f"after {_TRAINING_STEPS} steps the loss is {got:.5g}; float32 training reaches {reference:.5g} (from"
        f" {start:.5g}), and {contract.dtype} must land within {contract.training_rtol:.0%} of it",
    )


@_check()
def fabric_loop(subject: Subject, contract: Contract) -> None:
    """Fabric(plugins=[p]) trains with it: fabric.autocast(), setup, backward and step."""
    from lightning.fabric import Fabric
    from lightning.fabric.accelerators import ACCELERATOR_REGISTRY

    device = subject.device
    if device.type not in ACCELERATOR_REGISTRY:
        raise CheckSkipped(f"Lightning Fabric has no accelerator named {device.type!r}")
    p = subject.make()
    fabric = Fabric(accelerator=device.type, devices=1 if device.index is None else [device.index], plugins=[p])
    _require(fabric.strategy.precision is p, f"Fabric uses {fabric.strategy.precision!r}, not the object it was given")
    module = subject.model()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=_LR))
    x, y = subject.data
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        with fabric.autocast():
            enabled = torch.is_autocast_enabled(device.type)
            out = model(x)
            loss = F.mse_loss(out, y.to(out.dtype))
        _require(
            enabled == contract.autocast,
            f"autocast is {'on' if enabled else 'off'} inside fabric.autocast(), which must enter forward_context()",
        )
        fabric.backward(loss)
        optimizer.step()
        losses.append(float(loss.detach()))
    dtypes = {param.dtype for param in model.parameters()}
    _require(
        dtypes == {contract.parameter_dtype},
        f"after fabric.setup the parameters are {sorted(map(str, dtypes))}, not {contract.parameter_dtype}",
    )
    _require(losses[-1] < losses[0], f"five Fabric steps took the loss from {losses[0]:g} to {losses[-1]:g}")


#: Every per-precision check, in the order the suite runs them.
CHECKS: tuple[Check, ...] = tuple(_REGISTERED)
