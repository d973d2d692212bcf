"""What the checks share: what a check is, the subject it checks, how it fails, and the helpers of its groups.

A check is a function of a :class:`Subject` (one precision of one backend on one device) and the
precision's :class:`~mixprec.Contract`, wrapped by :func:`check` into a :class:`Check` that says which
contracts it applies to and which optional capability it needs. It passes by returning, fails by
raising :class:`CheckFailed` with a message that says what the object did, what the contract wants and
what to change, and may raise :class:`CheckSkipped` for a reason found only while running. Any other
exception is a failure too.

This module defines no check and registers nothing: the groups (``_checks_*.py``, ``_conversion.py``)
import it and define their checks, and :mod:`mixprec.testing._checks` lists them all, explicitly, in
the order the suite runs them. Imports run one way: this module, then the groups, then the list.

Every check builds its own precision objects (``get_precision`` returns a new one per call, which is
itself checked), so checks never see each other's scaler state. What they share depends on the device
alone and is built once per process: a tiny model (8-16-1, so that emulated float16 on a CPU stays
fast), its data, and the loss float32 training reaches. A check tests its behaviour and as little
else as it can, so that a defect shows up under its own name.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric.plugins.precision import Precision
from torch import Tensor, nn

import mixprec
from mixprec._backend import TARGETS, Availability, Backend, Device, StrategyFamily, Target
from mixprec._contract import STANDARD_CONTRACTS, Contract
from mixprec._errors import PrecisionWarning
from mixprec._import_lock import IMPORT_LOCK
from mixprec.testing._contract import SCALER_OPTIONS, torch_dtype

__all__ = [
    "FABRIC",
    "TARGETS",
    "TRAINER",
    "Check",
    "Target",
    "CheckFailed",
    "CheckSkipped",
    "Subject",
    "check",
    "fabric_for",
    "trainer_placement",
    "undeclared_contract",
]

FABRIC: tuple[Target, ...] = ("fabric",)
TRAINER: tuple[Target, ...] = ("trainer",)

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
    with IMPORT_LOCK:  # see mixprec._import_lock
        from lightning.fabric import Fabric
        from lightning.fabric.accelerators import ACCELERATOR_REGISTRY

    device = subject.device
    if device.type not in ACCELERATOR_REGISTRY:
        raise CheckSkipped(f"Lightning Fabric has no accelerator named {device.type!r}")
    from mixprec._fabric import one_device_strategy

    devices = 1 if device.index is None else [device.index]
    strategy = one_device_strategy(device.type, device.index) or "auto"
    return Fabric(accelerator=device.type, devices=devices, strategy=strategy, plugins=[p])


def trainer_placement(device: Device) -> dict[str, Any]:
    """The ``Trainer(...)`` arguments that put a one-device Trainer on ``device``: its accelerator, the device,
    and for a device type Lightning does not place itself a ``SingleDeviceStrategy`` on it."""
    with IMPORT_LOCK:  # see mixprec._import_lock
        from mixprec._trainer import one_device_strategy

    placement: dict[str, Any] = {
        "accelerator": device.type,
        "devices": 1 if device.index is None else [device.index],
    }
    strategy = one_device_strategy(device.type, device.index)
    if strategy is not None:
        placement["strategy"] = strategy
    return placement


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
        target: the object under test: for Fabric (``"fabric"``) or for the Trainer (``"trainer"``).
        family: the strategy family the object is for (``"fsdp"``: ``get_precision(..., strategy="fsdp")``), or None
            for the object of the ordinary strategies.
    """

    def __init__(
        self,
        backend: Backend,
        device: Device,
        precision: str,
        availability: Availability,
        target: Target = "fabric",
        family: StrategyFamily | None = None,
    ) -> None:
        self.backend = backend
        self.device = device
        self.precision = precision
        self.availability = availability
        #: Which object is under test: Fabric's ("fabric") or the Trainer's ("trainer").
        self.target: Target = target
        #: What checks of this subject share within one run (an expensive set-up, such as one Trainer.fit),
        #: by name: values only, never an object a check goes on to use.
        self.shared: dict[str, Any] = {}
        #: The strategy family of the object under test ("fsdp"), or None for the ordinary strategies' object.
        self.family: StrategyFamily | None = family
        #: What the precision promises: the core's standard contract, the backend's declared one, or None.
        self.contract = backend.contract(precision)

    def make(self, **options: Any) -> Precision:
        """A new object from ``get_precision`` for the subject's target; with loss scaling, the suite's GradScaler
        options come first.

        They are ``init_scale=1024.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000``: powers of two,
        so that scaled gradients are exact; ``options`` override them.
        """
        if self.contract is not None and self.contract.loss_scaling:
            options = {**SCALER_OPTIONS, **options}
        with warnings.catch_warnings():
            # "slow" precisions warn on every call; the suite checks them all the same.
            warnings.simplefilter("ignore", PrecisionWarning)
            return mixprec.get_precision(
                self.precision,
                str(self.device),
                backend=self.backend.name,
                target=self.target,
                strategy=self.family,
                **options,
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


@contextmanager
def quiet_trainer() -> Iterator[None]:
    """The Trainer's notes on the hardware and the data loader, which say nothing about the precision, kept out."""
    with IMPORT_LOCK:  # see mixprec._import_lock
        from lightning.fabric.utilities.warnings import PossibleUserWarning

    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PossibleUserWarning)
            # Lightning 2.6's own use of a pytree API that torch deprecates.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        logger.setLevel(level)


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
    """One named check, the contracts it applies to, and the optional capability it needs.

    Calling it runs the check: it returns, or raises :class:`CheckFailed`, :class:`CheckSkipped` or the
    backend's own error.
    """

    name: str
    function: Callable[[Subject, Contract], None]
    applies: Callable[[Contract], bool]
    capability: str | None = None
    #: The objects it checks: Fabric's, the Trainer's, or both (a promise both interfaces make).
    targets: tuple[Target, ...] = TARGETS

    def __call__(self, subject: Subject, contract: Contract) -> None:
        self.function(subject, contract)

    @property
    def summary(self) -> str:
        """The first paragraph of the check's docstring, on one line: what it promises."""
        paragraph = (self.function.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())


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


def check(
    applies: Callable[[Contract], bool] = _always,
    capability: str | None = None,
    targets: tuple[Target, ...] = TARGETS,
) -> Callable[[Callable[[Subject, Contract], None]], Check]:
    """Make the decorated function a :class:`Check` named after it; nothing is registered anywhere.

    ``targets`` are the objects it checks: by default both Fabric's and the Trainer's, for a promise of the
    interface they share (``forward_context``, ``convert_*``, ``state_dict``, ...); ``FABRIC`` or ``TRAINER``
    for a promise of one interface only (their ``backward`` and ``optimizer_step`` differ).
    """

    def wrap(function: Callable[[Subject, Contract], None]) -> Check:
        return Check(function.__name__, function, applies, capability, targets)

    return wrap


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


def undeclared_contract(subject: Subject) -> str:
    """The failure of ``contract_declared`` for a precision without a contract: how to declare one."""
    standard = ", ".join(STANDARD_CONTRACTS)
    return (
        f"{subject.precision!r} is not a standard precision ({standard}) and backend {subject.backend.name!r}"
        " declares no contract for it, so nothing it does can be verified. Declare what it promises in the"
        " backend's description, e.g. Backend(..., contracts={"
        f"{subject.precision!r}: Contract(compute_dtype='bfloat16', autocast=True)"
        "}) with `from mixprec import Contract` (its fields: compute_dtype, parameter_dtype, autocast,"
        " loss_scaling, converts_io, converts_modules, matmul_dtype, dims_multiple, training_rtol, unsupported,"
        " option_trials, description)."
    )
