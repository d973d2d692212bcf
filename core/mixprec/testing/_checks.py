"""The checks: what a check is, what the checks share, the checks of the object itself, and CHECKS.

A check is a function of a :class:`Subject` (one precision of one backend on one device) and the
precision's :class:`~mixprec.Contract`. It passes by returning, fails by raising
:class:`CheckFailed` with a message that says what the object did, what the contract wants and what
to change, and may raise :class:`CheckSkipped` for a reason found only while running. Any other
exception is a failure too.

The checks live in one module per part of Lightning's ``Precision`` interface, each a flat list of
small functions named after the behaviour they test, registered in the order they are defined:
this module (the object), ``_checks_context`` (``forward_context``, the init contexts,
``teardown``), ``_checks_convert`` (``convert_module``, ``convert_input``, ``convert_output``),
``_checks_step`` (``backward``, ``optimizer_step``, ``unscale_gradients``, ``main_params``),
``_checks_state`` (``state_dict``, ``load_state_dict``), ``_checks_training`` (end to end) and
``_conversion`` (module conversion). The docstring of :mod:`mixprec.testing` lists every promise with its
check.

Every check builds its own precision objects (``get_precision`` returns a new one per call, which is
itself checked), so checks never see each other's scaler state. What they share depends on the device
alone and is built once per process: a tiny model (8-16-1, so that emulated float16 on a CPU stays
fast), its data, and the loss float32 training reaches. A check tests its behaviour and as little
else as it can, so that a defect shows up under its own name.
"""

from __future__ import annotations

import copy
import functools
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric.plugins.precision import Precision
from torch import Tensor, nn

import mixprec
from mixprec._backend import Availability, Backend, Device
from mixprec._contract import STANDARD_CONTRACTS, Contract
from mixprec._errors import PrecisionWarning
from mixprec.testing._contract import SCALER_OPTIONS, torch_dtype

__all__ = ["CHECKS", "Check", "CheckFailed", "CheckSkipped", "Subject", "undeclared_contract"]

_LR = 0.2
_TRAINING_STEPS = 30


class CheckFailed(Exception):
    """A check found the backend breaking its promise; the message says how, and what to change."""


class CheckSkipped(Exception):
    """A check cannot run here; the message says why."""


def fabric_for(subject: Subject, p: Precision) -> Any:
    """A one-device Lightning Fabric on the subject's device with ``p`` as its precision plugin.

    Raises :class:`CheckSkipped` where Lightning has no accelerator for the device type.
    """
    from lightning.fabric import Fabric
    from lightning.fabric.accelerators import ACCELERATOR_REGISTRY

    device = subject.device
    if device.type not in ACCELERATOR_REGISTRY:
        raise CheckSkipped(f"Lightning Fabric has no accelerator named {device.type!r}")
    return Fabric(accelerator=device.type, devices=1 if device.index is None else [device.index], plugins=[p])


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def _close(actual: Any, expected: Any, what: str) -> None:
    """Require tensors equal within the tolerance torch uses for their dtype; ``what`` says what and what to change."""
    try:
        torch.testing.assert_close(actual, expected)
    except AssertionError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckFailed(f"{what} ({detail})") from None


def compute_dtype(contract: Contract) -> torch.dtype:
    """The dtype the contract computes in, as torch's dtype."""
    return torch_dtype(contract.compute_dtype)


def parameter_dtype(contract: Contract) -> torch.dtype:
    """The dtype of the contract's parameters, as torch's dtype."""
    return torch_dtype(contract.parameter_dtype)


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
        #: What the precision promises: the core's standard contract, the backend's declared one, or None.
        self.contract = backend.contract(precision)

    def make(self, **options: Any) -> Precision:
        """A new object from ``get_precision``; with loss scaling, the suite's GradScaler options come first.

        They are ``init_scale=1024.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000``: powers of two,
        so that scaled gradients are exact; ``options`` override them.
        """
        if self.contract is not None and self.contract.loss_scaling:
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
        """The first paragraph of the check's docstring, on one line: what it promises."""
        paragraph = (self.function.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())


_REGISTERED: list[Check] = []


def _always(contract: Contract) -> bool:
    return True


def _autocast(contract: Contract) -> bool:
    return contract.autocast


def _scaler(contract: Contract) -> bool:
    return contract.loss_scaling


def _no_scaler(contract: Contract) -> bool:
    return not contract.loss_scaling


def _wide_parameters(contract: Contract) -> bool:
    # torch's fused CPU kernels disagree with the unfused ones on float16/bfloat16 parameters (torch 2.13: a
    # fused SGD step barely moves them), which is torch's business, not the backend's.
    return contract.parameter_dtype in ("float32", "float64")


def _check(
    applies: Callable[[Contract], bool] = _always, capability: str | None = None
) -> Callable[[Callable[[Subject, Contract], None]], Callable[[Subject, Contract], None]]:
    """Register the decorated function as a check, in definition order."""

    def register(function: Callable[[Subject, Contract], None]) -> Callable[[Subject, Contract], None]:
        _REGISTERED.append(Check(function.__name__, function, applies, capability))
        return function

    return register


# --- what the step checks share -----------------------------------------------------------------


def _loss(model: nn.Module, subject: Subject) -> Tensor:
    """The suite's loss of ``model``, computed without the plugin in the parameters' dtype, so it is exact."""
    x, y = subject.data
    dtype = next(model.parameters()).dtype
    return F.mse_loss(model(x.to(dtype)), y.to(dtype))


def _true_gradients(model: nn.Module, subject: Subject) -> list[Tensor]:
    return list(torch.autograd.grad(_loss(model, subject), list(model.parameters())))


def _param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Two parameter groups with learning rates of their own: the first layer's parameters, and the others."""
    params = list(model.parameters())
    return [{"params": params[:2], "lr": _LR}, {"params": params[2:], "lr": _LR / 2}]


def _sgd_step(model: nn.Module, gradients: list[Tensor]) -> list[Tensor]:
    """The weights one step with ``gradients`` gives, by torch's own SGD on a copy, in :func:`_param_groups`."""
    copied = copy.deepcopy(model)
    for param, grad in zip(copied.parameters(), gradients, strict=True):
        param.grad = grad.clone()
    torch.optim.SGD(_param_groups(copied)).step()
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
        raise CheckFailed("backward() left the parameters without gradients; it must compute them (tensor.backward())")
    grad.view(-1)[0] = value


def _scale(p: Precision) -> float:
    scaler = getattr(p, "scaler", None)
    if not isinstance(scaler, torch.amp.GradScaler):
        raise CheckFailed(
            f"scaler is {scaler!r}; the contract scales the loss, so it must be a torch.amp.GradScaler"
            " (build it with mixprec.precision.make_scaler(request))"
        )
    return float(scaler.get_scale())


# --- the object ---------------------------------------------------------------------------------


def undeclared_contract(subject: Subject) -> str:
    """The failure of ``contract_declared`` for a precision without a contract: how to declare one."""
    standard = ", ".join(STANDARD_CONTRACTS)
    return (
        f"{subject.precision!r} is not a standard precision ({standard}) and backend {subject.backend.name!r}"
        " declares no contract for it, so nothing it does can be verified. Declare what it promises in the"
        " backend's description, e.g. Backend(..., contracts={"
        f"{subject.precision!r}: Contract(compute_dtype='bfloat16', autocast=True)"
        "}) with `from mixprec import Contract` (its fields: compute_dtype, parameter_dtype, autocast,"
        " loss_scaling, converts_io, converts_modules, matmul_dtype, training_rtol, unsupported, description)."
    )


@_check()
def contract_declared(subject: Subject, contract: Contract) -> None:
    """The precision has a contract (the core's, or the backend's in Backend.contracts) that names torch's dtypes."""
    # A precision without a contract never gets here: its only case fails with undeclared_contract().
    for field in ("compute_dtype", "parameter_dtype", "matmul_dtype"):
        name = getattr(contract, field)
        if name is None:
            continue
        try:
            torch_dtype(name)
        except LookupError as exc:
            raise CheckFailed(
                f"the contract's {field} is {name!r}: {exc}. Name a dtype this torch has, or have the"
                f" backend's policy answer 'unavailable' for {subject.precision!r} with this torch"
            ) from None


@_check()
def is_lightning_precision(subject: Subject, contract: Contract) -> None:
    """The object is a lightning.fabric.plugins.precision.Precision.

    get_precision itself refuses an object that is not one (a PluginError naming the backend), so such a
    backend fails every check that builds an object; this one names the promise.
    """
    p = subject.make()
    _require(
        isinstance(p, Precision),
        f"get_precision returned a {type(p).__module__}.{type(p).__qualname__}; Fabric(plugins=[p]) takes only a"
        " lightning.fabric.plugins.precision.Precision: subclass one of Lightning's precision classes"
        " (mixprec.precision.AutocastPrecision for autocast)",
    )


@_check()
def matches_request(subject: Subject, contract: Contract) -> None:
    """precision, device and scaler are those of the request and the contract."""
    p = subject.make()
    precision = getattr(p, "precision", None)
    _require(
        precision == subject.precision,
        f"precision is {precision!r}; the object was asked for {subject.precision!r}: set its precision to that",
    )
    scaler = getattr(p, "scaler", None)
    if contract.loss_scaling:
        if not isinstance(scaler, torch.amp.GradScaler):
            raise CheckFailed(
                f"scaler is {scaler!r}; the contract of {subject.precision!r} scales the loss, which needs a"
                " torch.amp.GradScaler: build it with mixprec.precision.make_scaler(request)"
            )
        _require(
            scaler.is_enabled(),
            "the GradScaler is disabled, so it neither scales nor skips steps; the contract scales the loss:"
            " build it for a device torch supports it on (mixprec.precision.make_scaler(request))",
        )
        scaler_device = getattr(scaler, "_device", None)
        _require(
            scaler_device == subject.device.type,
            f"the GradScaler is for device {scaler_device!r}; the object runs on {subject.device.type!r}: build it"
            " for request.device.type (mixprec.precision.make_scaler(request) does)",
        )
    else:
        _require(
            scaler is None,
            f"scaler is {scaler!r}; the contract of {subject.precision!r} scales no loss: set scaler to None",
        )
    if contract.autocast:
        device = getattr(p, "device", None)
        _require(
            device == subject.device.type,
            f"device is {device!r}; autocast must run on the requested device type {subject.device.type!r}:"
            " pass request.device.type to the object",
        )


@_check()
def new_object_per_call(subject: Subject, contract: Contract) -> None:
    """Each call returns a new object, and no two objects share a GradScaler."""
    a, b = subject.make(), subject.make()
    _require(
        a is not b,
        "two calls to get_precision returned the same object; each must get its own: build a new object in create()",
    )
    if contract.loss_scaling:
        _require(
            getattr(a, "scaler", None) is not getattr(b, "scaler", None),
            "two objects share one GradScaler, so the scale and its skipped steps leak from one training run to"
            " another: build a new scaler in every create() call (mixprec.precision.make_scaler(request))",
        )


# The other groups register their checks as they are imported: in this order, after the checks above.
for _group in (
    "_checks_context",
    "_checks_convert",
    "_checks_step",
    "_checks_state",
    "_checks_training",
    "_conversion",
    "_torch_flags",
    "_nesting",
    "_teardown",
    "_threads",
    "_pickling",
    "_identity",
    "_linear_subclasses",
    "_options",
    "_float8",
    "_trainer_autocast",
):
    importlib.import_module(f"mixprec.testing.{_group}")

#: Every per-precision check, in the order the suite runs them.
CHECKS: tuple[Check, ...] = tuple(_REGISTERED)
