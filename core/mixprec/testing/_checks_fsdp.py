"""The checks of the FSDP objects (``get_precision(..., strategy="fsdp")``, Fabric's and the Trainer's), and which
checks run on which subject.

The FSDP object is Lightning's ``FSDPPrecision``: the same ``Precision`` interface as the ordinary object,
plus ``mixed_precision_config`` (the dtypes FSDP keeps parameters in, reduces gradients in and keeps buffers
in), a ``ShardedGradScaler`` where the loss is scaled, inputs cast to the parameters' dtype (float32 under a
mixed precision), and no float64. Every shared check but those of :data:`NOT_SHARED` (each with its reason)
runs on it against the precision's contract, and the checks here on it alone (see :func:`runs_on`).

Lightning runs its FSDP strategies on CUDA only (``Fabric(strategy="fsdp")`` and ``Trainer(strategy="fsdp")``
refuse any other accelerator, and torch's ``FullyShardedDataParallel`` needs a non-CPU accelerator), so the
loops (``fabric_loop``, the Trainer's fit and resume) are not run on the FSDP objects: the checks here test what
Lightning's FSDP strategy takes from the object, on any device.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import torch

import mixprec
from mixprec._contract import Contract
from mixprec._errors import PluginError, PrecisionError, PrecisionWarning
from mixprec.testing._base import (
    TRAINER,
    Check,
    CheckFailed,
    Subject,
    _require,
    _scale,
    check,
    compute_dtype,
    parameter_dtype,
)
from mixprec.testing._checks_convert import _check_converted, _sample
from mixprec.testing._checks_trainer import trainer_clip_gradients_by_norm

__all__ = ["FSDP_CHECKS", "NOT_SHARED", "runs_on"]


def _trains_in_fsdp(contract: Contract) -> bool:
    return contract.parameter_dtype != "float64"


def _float64(contract: Contract) -> bool:
    return contract.parameter_dtype == "float64"


def _scaled_in_fsdp(contract: Contract) -> bool:
    return contract.loss_scaling and _trains_in_fsdp(contract)


_NORM_CLIPPING = (
    "Lightning's FSDPPrecision for the Trainer refuses gradient_clip_algorithm='norm' (the sharded module clips by"
    " norm: model.clip_grad_norm_)"
)


@check(_trains_in_fsdp)
def fsdp_mixed_precision_config(subject: Subject, contract: Contract) -> None:
    """mixed_precision_config keeps FSDP's parameters, gradient reductions and buffers in the contract's compute dtype.

    Lightning's FSDP strategy wraps the model with it, so it decides the dtype of the sharded forward and backward.
    """
    p: Any = subject.make()
    with subject_warnings():
        config = p.mixed_precision_config
    from torch.distributed.fsdp import MixedPrecision

    _require(
        isinstance(config, MixedPrecision),
        f"mixed_precision_config is {config!r}; Lightning's FSDP strategy wraps the model with it, so it must be a"
        " torch.distributed.fsdp.MixedPrecision: subclass Lightning's FSDPPrecision (mixprec.precision builds it)",
    )
    expected = compute_dtype(contract)
    for field in ("param_dtype", "reduce_dtype", "buffer_dtype"):
        actual = getattr(config, field)
        _require(
            actual == expected,
            f"mixed_precision_config.{field} is {actual}; {subject.precision!r} computes in {expected}, so FSDP must"
            f" keep {field.partition('_')[0]}s in {expected}: build the object with mixprec.precision"
            " (mixed_precision or true_precision) for strategy='fsdp'",
        )


@check(_trains_in_fsdp)
def fsdp_converts_io(subject: Subject, contract: Contract) -> None:
    """convert_input casts floating inputs to the parameters' dtype (float32 for a mixed precision and "32-true"), as
    FSDP's flat parameters are kept; convert_output casts floating outputs to the default dtype, whatever the
    precision."""
    p = subject.make()
    data = _sample(subject.torch_device, torch.float32)
    dtype = parameter_dtype(contract)
    rule = f"under FSDP, cast every floating input to the parameters' dtype, {dtype}, as Lightning's FSDPPrecision does"
    _check_converted(data, p.convert_input(data), lambda tensor: dtype, "convert_input", rule)
    data = _sample(subject.torch_device, compute_dtype(contract))
    rule = "under FSDP, cast every floating output to torch.get_default_dtype(), as Lightning's FSDPPrecision does"
    _check_converted(data, p.convert_output(data), lambda tensor: torch.get_default_dtype(), "convert_output", rule)


@check(_trains_in_fsdp)
def fsdp_built_without_warnings(subject: Subject, contract: Contract) -> None:
    """Building the FSDP object warns nothing but mixprec's PrecisionWarning (a "slow" precision): no note of
    Lightning's about a scaler for a device that is not there, which mixprec replaces with the requested one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixprec.get_precision(
            subject.precision, str(subject.device), backend=subject.backend.name, target=subject.target, strategy="fsdp"
        )
    shown = [str(w.message) for w in caught if not issubclass(w.category, PrecisionWarning)]
    _require(
        not shown,
        f"get_precision(..., strategy='fsdp') warned {shown}; the object is built for the requested device: keep"
        " Lightning's notes about a default it replaces out (mixprec.precision's builders do)",
    )


@check(_trains_in_fsdp, targets=TRAINER)
def fsdp_norm_clipping_refused(subject: Subject, contract: Contract) -> None:
    """The Trainer's FSDP object clips by norm or refuses to: clip_gradients(optimizer, clip_val, "norm") clips every
    parameter group to that total norm, or raises Lightning's MisconfigurationException (its FSDP strategy clips by
    norm through the sharded module); it never leaves the gradients unclipped in silence."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer_clip_gradients_by_norm(subject, contract)
    except MisconfigurationException:
        return


@check(_float64)
def fsdp_refuses_float64(subject: Subject, contract: Contract) -> None:
    """A float64 precision under FSDP, which does not train in float64, is refused with a PrecisionError saying so."""
    try:
        p = subject.make()
    except PluginError as exc:
        raise CheckFailed(
            f"get_precision({subject.precision!r}, strategy='fsdp') failed in the backend's create(): {exc}. Refuse"
            " a float64 precision under FSDP with a mixprec.PrecisionError that says what to use instead"
        ) from None
    except PrecisionError as exc:
        message = str(exc)
        _require(
            subject.precision in message and "FSDP" in message,
            f"the PrecisionError says {message!r}; it must name {subject.precision!r} and FSDP and say what to use",
        )
        return
    except Exception as exc:
        raise CheckFailed(
            f"get_precision({subject.precision!r}, strategy='fsdp') raised {type(exc).__name__}: {exc}; FSDP does not"
            " train in float64, which must be a mixprec.PrecisionError that says what to use instead"
        ) from None
    raise CheckFailed(
        f"get_precision({subject.precision!r}, strategy='fsdp') returned a {type(p).__name__}; FSDP does not train in"
        " float64 (Lightning's FSDPPrecision refuses it), so it must raise a mixprec.PrecisionError saying so"
    )


@check(_scaled_in_fsdp)
def fsdp_scaler_is_sharded(subject: Subject, contract: Contract) -> None:
    """With loss scaling the scaler is a ShardedGradScaler, built from the request's options, whose overflow is
    reduced over the process group so that every rank skips the same steps."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    p = subject.make(init_scale=256.0)
    scaler = getattr(p, "scaler", None)
    _require(
        isinstance(scaler, ShardedGradScaler),
        f"scaler is {scaler!r}; under FSDP each rank sees only its shard of the gradients, so the scaler must be a"
        " torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler: build it with mixprec.precision.make_scaler",
    )
    _require(
        _scale(p) == 256.0,
        f"the scale is {_scale(p)} after get_precision(..., strategy='fsdp', init_scale=256.0); the scaler must be"
        " built from the request's options (mixprec.precision.make_scaler(request))",
    )


@contextmanager
def subject_warnings() -> Iterator[None]:
    """Lightning's note that "16-true" and "bf16-true" under FSDP keep a float32 copy of the parameters, kept out."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FSDP with `.*` enables computation in lower precision")
        yield


#: The checks of the FSDP objects alone, in the order the suite runs them.
FSDP_CHECKS: tuple[Check, ...] = (
    fsdp_mixed_precision_config,
    fsdp_converts_io,
    fsdp_built_without_warnings,
    fsdp_norm_clipping_refused,
    fsdp_refuses_float64,
    fsdp_scaler_is_sharded,
)

#: The shared checks that do not run on the FSDP objects, each with the reason; every other check does.
NOT_SHARED: Mapping[str, str] = MappingProxyType(
    {
        "contract_declared": "a check of the description, run once per precision",
        "trainer_clips_after_closure": _NORM_CLIPPING,
        "trainer_clip_gradients_by_norm": _NORM_CLIPPING,
        "trainer_fused_optimizer_clipped": _NORM_CLIPPING,
        "trainer_nonfinite_step_skipped_when_clipping": _NORM_CLIPPING,
    }
)
#: The shared checks that ``fsdp_converts_io`` replaces on the FSDP objects.
_REPLACED = frozenset({"convert_input", "convert_output", "trainer_convert_input"})


def runs_on(check: Check, subject: Subject) -> bool:
    """Whether ``check`` runs on ``subject``: the FSDP checks on the FSDP objects alone, and every other check on
    every object but those of :data:`NOT_SHARED` (and ``convert_input``, ``convert_output`` and
    ``trainer_convert_input``, which ``fsdp_converts_io`` replaces) on the FSDP objects.
    No check but :func:`fsdp_refuses_float64` runs on a float64 precision's FSDP object, which FSDP refuses."""
    if subject.family is None:
        return check not in FSDP_CHECKS
    if check in FSDP_CHECKS:
        return True
    contract = subject.contract
    if contract is None or not _trains_in_fsdp(contract):
        return False
    return check.name not in NOT_SHARED and check.name not in _REPLACED
