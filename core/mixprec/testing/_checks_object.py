"""The checks of the object itself: its contract, its class, what it was asked for, and a new one per call."""

from __future__ import annotations

import torch
from lightning.fabric.plugins.precision import Precision

from mixprec._contract import Contract
from mixprec.testing._base import FABRIC, CheckFailed, Subject, _require, check
from mixprec.testing._contract import torch_dtype


# About the description, not an object: once per precision, under Fabric's id.
@check(targets=FABRIC)
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


@check()
def is_lightning_precision(subject: Subject, contract: Contract) -> None:
    """The object is a lightning.fabric.plugins.precision.Precision; the Trainer's, a lightning.pytorch one.

    get_precision itself refuses an object that is not one (a PluginError naming the backend), so such a
    backend fails every check that builds an object; this one names the promise.
    """
    p = subject.make()
    if subject.target == "trainer":
        from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

        _require(
            isinstance(p, TrainerPrecision),
            f"get_precision(..., target='trainer') returned a {type(p).__module__}.{type(p).__qualname__};"
            " Trainer(plugins=[p]) takes only a lightning.pytorch.plugins.precision.Precision: subclass one of"
            " the Trainer's precision classes (mixprec.precision.TrainerAutocastPrecision for autocast)",
        )
        return
    _require(
        isinstance(p, Precision),
        f"get_precision returned a {type(p).__module__}.{type(p).__qualname__}; Fabric(plugins=[p]) takes only a"
        " lightning.fabric.plugins.precision.Precision: subclass one of Lightning's precision classes"
        " (mixprec.precision.AutocastPrecision for autocast)",
    )


@check()
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


@check()
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
