"""Building precision objects: what a backend's policy calls in ``create(request)``.

A backend that only decides *where* a standard precision runs builds the standard object, and its
whole ``create`` is :func:`standard_precision`::

    from mixprec.precision import standard_precision


    def create(request):
        return standard_precision(request)

:func:`mixed_precision` and :func:`true_precision` build one family each. A backend with an
object of its own builds it from the pieces: :func:`make_scaler` (the GradScaler with the user's
options), :func:`strategy_family` (which precision class the requested Lightning strategy takes),
:class:`AutocastPrecision` (the class of mixprec's mixed precisions for Fabric, to subclass) and
:class:`ScalerGuard` (the mixin that makes any Lightning precision refuse state it cannot take).

Importing this module imports torch, never lightning, so a policy may import it at module level
and ``mixprec list`` still imports no lightning. Lightning comes in when the first object is built
(``lightning.fabric``; ``lightning.pytorch`` too for ``target="trainer"``), when a strategy is
looked up, or when :class:`AutocastPrecision` or :class:`ScalerGuard` is first used.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from mixprec import _vocabulary
from mixprec._backend import Request
from mixprec._contract import STANDARD_CONTRACTS
from mixprec._errors import OptionError, PrecisionError
from mixprec._import_lock import IMPORT_LOCK, import_module
from mixprec._scaler import SCALER_OPTIONS, check_options

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

    from mixprec._fabric import AutocastPrecision, ScalerGuard
    from mixprec._trainer import TrainerAutocastPrecision

__all__ = [
    "MIXED_DTYPES",
    "SCALER_OPTIONS",
    "TRUE_PRECISIONS",
    "AutocastPrecision",
    "ScalerGuard",
    "TrainerAutocastPrecision",
    "make_scaler",
    "mixed_precision",
    "standard_precision",
    "strategy_family",
    "true_precision",
]

#: The autocast dtype of each standard mixed precision that :func:`mixed_precision` builds.
MIXED_DTYPES: Mapping[str, torch.dtype] = {
    precision: getattr(torch, dtype) for precision, dtype in _vocabulary.MIXED_PRECISIONS.items()
}
#: The precisions without autocast or scaler that :func:`true_precision` builds.
TRUE_PRECISIONS = tuple(_vocabulary.TRUE_PRECISIONS)

#: The classes resolved at first use, each with the module that imports lightning for it.
_LAZY = {
    "AutocastPrecision": "mixprec._fabric",
    "ScalerGuard": "mixprec._fabric",
    "TrainerAutocastPrecision": "mixprec._trainer",
}
#: Lightning's strategy classes that take an ordinary precision plugin (Fabric and Trainer alike).
_PLAIN_STRATEGY_CLASSES = ("DDPStrategy", "DataParallelStrategy", "SingleDeviceStrategy")


def standard_precision(request: Request) -> Precision:
    """Build the standard object for ``request``, as its precision's standard contract says.

    "16-mixed" is autocast to float16 with a GradScaler (built by :func:`make_scaler` from the
    user's options), "bf16-mixed" autocast to bfloat16, and "32-true", "64-true", "16-true",
    "bf16-true" Lightning's classes for them. The object is for ``request.target`` (Fabric or the
    Trainer) and the strategy family of ``request.strategy`` (see :func:`strategy_family`), on
    ``request.device``. Every call builds a new object.

    Args:
        request: the request the policy's ``create`` was given.

    Returns:
        A new Lightning ``Precision`` (for ``target="trainer"`` a ``lightning.pytorch`` one).

    Raises:
        PrecisionError: the precision is not one of the above ("fp8-mixed" needs a backend that
            converts the model's layers), or the strategy is not served (see :func:`strategy_family`).
        OptionError: an option the precision does not take, or a GradScaler option out of range.

    Example:
        The whole ``create`` of a backend that only says where the standard precisions run::

            from typing import TYPE_CHECKING

            from mixprec import Request
            from mixprec.precision import standard_precision

            if TYPE_CHECKING:
                from lightning.fabric.plugins.precision import Precision


            def create(request: Request) -> Precision:
                return standard_precision(request)
    """
    precision = request.precision
    if precision in MIXED_DTYPES:
        return mixed_precision(request, scaler=STANDARD_CONTRACTS[precision].loss_scaling)
    if precision in TRUE_PRECISIONS:
        return true_precision(request)
    hint = (
        " 'fp8-mixed' replaces the model's linear layers, which only a backend for it does (such as mixprec-fp8)."
        if precision == "fp8-mixed"
        else ""
    )
    raise PrecisionError(f"standard_precision() builds {[*MIXED_DTYPES, *TRUE_PRECISIONS]}, not {precision!r}.{hint}")


def mixed_precision(request: Request, *, scaler: bool) -> Precision:
    """Build the autocast object for ``request``: "16-mixed" or "bf16-mixed".

    ``forward_context()`` autocasts to ``MIXED_DTYPES[precision]`` on the request's device
    type. With a scaler, the object carries the GradScaler :func:`make_scaler` builds from the
    user's options, ``backward`` scales the loss and ``optimizer_step`` skips a step whose gradients
    overflowed. For Fabric the object is an :class:`AutocastPrecision`; for
    ``strategy_family(request) == "fsdp"`` it is Lightning's ``FSDPPrecision`` on the request's
    device; for ``target="trainer"`` the Trainer's classes of the same names as Lightning's.

    Args:
        request: the request the policy's ``create`` was given.
        scaler: whether the object carries a GradScaler: True for "16-mixed" (float16 needs loss
            scaling on every device), False for "bf16-mixed" (bfloat16 has float32's range), as
            their standard contracts fix. :func:`standard_precision` passes the right value.

    Returns:
        A new Lightning ``Precision``.

    Raises:
        PrecisionError: the precision is not a mixed one, ``scaler`` disagrees with its contract,
            or the strategy is not served (see :func:`strategy_family`).
        OptionError: options for "bf16-mixed" (it takes none), or a GradScaler option that is
            unknown or out of range.

    Example:
        A backend that serves "16-mixed" and "bf16-mixed" alike::

            from mixprec.precision import mixed_precision


            def create(request):
                return mixed_precision(request, scaler=request.precision == "16-mixed")
    """
    precision = request.precision
    if precision not in MIXED_DTYPES:
        raise PrecisionError(f"mixed_precision() builds {list(MIXED_DTYPES)}, not {precision!r}.")
    needs_scaler = STANDARD_CONTRACTS[precision].loss_scaling
    if scaler != needs_scaler:
        has = "has" if needs_scaler else "has no"
        raise PrecisionError(
            f"mixed_precision(request, scaler={scaler!r}) for {precision!r}: the standard contract of {precision!r}"
            f" {has} loss scaling, so pass scaler={needs_scaler}, or build it with standard_precision(request)."
        )
    family = strategy_family(request)
    if not scaler:
        _check_options(request, ())
    with IMPORT_LOCK:
        from mixprec import _fabric

    grad_scaler = _make_scaler(request, family) if scaler else None
    device = request.device.type
    if request.target == "trainer":
        with IMPORT_LOCK:
            from mixprec import _trainer

        return _trainer.mixed_precision(precision, device, grad_scaler, family)
    return _fabric.mixed_precision(precision, device, grad_scaler, family)


def true_precision(request: Request) -> Precision:
    """Build the object for "32-true", "64-true", "16-true" or "bf16-true": no autocast, no scaler.

    Lightning's ``Precision``, ``DoublePrecision`` or ``HalfPrecision`` (``FSDPPrecision`` for
    ``strategy_family(request) == "fsdp"``), Fabric's or the Trainer's as ``request.target`` says,
    refusing GradScaler state given to ``load_state_dict`` instead of ignoring it.

    Args:
        request: the request the policy's ``create`` was given.

    Returns:
        A new Lightning ``Precision``.

    Raises:
        PrecisionError: the precision is not a "true" one, it is "64-true" under FSDP (which does
            not train in float64), or the strategy is not served (see :func:`strategy_family`).
        OptionError: any option (the "true" precisions take none).

    Example:
        A backend that serves the mixed precisions itself and leaves the "true" ones standard::

            from mixprec.precision import TRUE_PRECISIONS, true_precision


            def create(request):
                if request.precision in TRUE_PRECISIONS:
                    return true_precision(request)
                return build_my_mixed_precision(request)
    """
    precision = request.precision
    if precision not in TRUE_PRECISIONS:
        raise PrecisionError(f"true_precision() builds {list(TRUE_PRECISIONS)}, not {precision!r}.")
    _check_options(request, ())
    family = strategy_family(request)
    if family == "fsdp" and precision == "64-true":
        raise PrecisionError("FSDP does not train in '64-true'; use '32-true' or a mixed precision.")
    device = request.device.type
    if request.target == "trainer":
        with IMPORT_LOCK:
            from mixprec import _trainer

        found: Any = _trainer.true_precision(precision, device, family)
    else:
        with IMPORT_LOCK:
            from mixprec import _fabric

        found = _fabric.true_precision(precision, device, family)
    # Lightning's true classes know no device; the check of an optimizer's first step needs it.
    found.mixprec_device = device
    return found  # type: ignore[no-any-return]


def make_scaler(request: Request) -> torch.amp.GradScaler:
    """Build a new GradScaler for ``request``: on its device type, configured from ``request.options``.

    ``torch.amp.GradScaler(request.device.type, **options)``, or for
    ``strategy_family(request) == "fsdp"`` a ``ShardedGradScaler``, which agrees across ranks on
    whether to skip a step. Every option must be one of :data:`SCALER_OPTIONS`, with a value the
    scaler's tensors can keep: ``init_scale`` a float32 from the smallest normal (1.1754944e-38)
    to the largest (3.4028235e+38), ``growth_factor`` above 1 and ``backoff_factor`` between 0 and
    1 once rounded to float32, ``growth_interval`` an int from 1 to 2**31 - 1 (the growth tracker is
    an int32 tensor); and one backoff from the initial scale must leave a normal float32 (else torch
    would unscale by an infinite reciprocal at the first overflow and turn the weights inf or NaN).

    Args:
        request: the request the policy's ``create`` was given.

    Returns:
        A new, enabled ``torch.amp.GradScaler``.

    Raises:
        OptionError: an option that is not a GradScaler's, or a value outside its range (the message
            says the range).
        PrecisionError: the strategy is not served (see :func:`strategy_family`).

    Example:
        A backend's own subclass of :class:`AutocastPrecision`, with the user's scaler options::

            from mixprec.precision import make_scaler

            scaler = make_scaler(request) if request.precision == "16-mixed" else None
            return MyAutocastPrecision(request.precision, request.device.type, scaler=scaler)
    """
    return _make_scaler(request, strategy_family(request))


def _make_scaler(request: Request, family: str | None) -> torch.amp.GradScaler:
    _check_options(request, SCALER_OPTIONS)
    options = check_options(request.options)
    if request.device.type == "cuda":
        # A CUDA GradScaler asks torch.cuda.is_available(), which starts the CUDA driver (and breaks forked
        # workers) unless torch counts GPUs through NVML; Lightning sets the same on import. A user's value stays.
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if family == "fsdp":
        with IMPORT_LOCK:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        # process_group=None: the default group when the step runs. torch's default is the group of the moment it
        # imported the module, which may be a group destroyed since.
        return ShardedGradScaler(device=request.device.type, process_group=None, **options)  # type: ignore[arg-type]
    return torch.amp.GradScaler(request.device.type, **options)  # type: ignore[arg-type]


def strategy_family(request: Request) -> Literal["fsdp"] | None:
    """Which kind of precision class the Lightning strategy ``request.strategy`` takes.

    "fsdp" for Lightning's FSDP strategies ("fsdp", "fsdp_cpu_offload", ...), which take only an
    ``FSDPPrecision``; None for no strategy, "auto", and the strategies that take an ordinary
    precision plugin (DDP and its variants, DP, a single device). A name is looked up in
    Lightning's strategy registry for ``request.target``, imported only then.

    Args:
        request: the request the policy's ``create`` was given.

    Returns:
        "fsdp" or None.

    Raises:
        PrecisionError: the strategy works only with a precision class of its own that mixprec does
            not build (DeepSpeed, XLA), or Lightning has no strategy of that name; the message
            lists the strategies mixprec serves, with the closest name.

    Example:
        A backend whose objects suit the ordinary strategies only::

            from mixprec import PrecisionError
            from mixprec.precision import strategy_family


            def create(request):
                if strategy_family(request) is not None:
                    raise PrecisionError("mixprec-x builds no precision for FSDP: leave strategy unset.")
                return MyPrecision()
    """
    return family_of(request.strategy, request.target)


def family_of(name: str | None, target: str) -> Literal["fsdp"] | None:
    """:func:`strategy_family` for strategy ``name`` and ``target``, before there is a request (the resolver asks it
    to pass over backends that build no objects for the family, ``Backend.strategy_families``)."""
    if name is None or name == "auto":
        return None
    served = _served_strategies(target)
    if name in served:
        return served[name]
    names = ", ".join(sorted(served))
    cls = _lightning_strategies(target)[1].get(name)
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


def _served_strategies(target: str) -> dict[str, Literal["fsdp"] | None]:
    """The strategy names Lightning registers for ``target`` that mixprec builds precisions for, each
    with its family: "fsdp" for the FSDP strategies, None for those that take an ordinary plugin."""
    strategies, registered = _lightning_strategies(target)
    plain = tuple(getattr(strategies, name) for name in _PLAIN_STRATEGY_CLASSES if hasattr(strategies, name))
    served: dict[str, Literal["fsdp"] | None] = {"auto": None}
    for name, cls in registered.items():
        if cls is strategies.FSDPStrategy:
            served[name] = "fsdp"
        elif cls in plain:
            served[name] = None
    return served


def _lightning_strategies(target: str) -> tuple[Any, dict[str, type]]:
    """Lightning's strategies package for ``target`` and its registry, as name -> strategy class."""
    package = "lightning.pytorch" if target == "trainer" else "lightning.fabric"
    strategies = import_module(f"{package}.strategies")
    registry = strategies.StrategyRegistry if target == "trainer" else strategies.STRATEGY_REGISTRY
    return strategies, {name: entry["strategy"] for name, entry in registry.items()}


def _check_options(request: Request, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(request.options) - set(valid))
    if unknown:
        takes = f"takes only {list(valid)}" if valid else "takes no options"
        raise OptionError(
            f"Unknown option(s) {unknown} for {request.precision!r} from backend {request.backend!r}: it {takes}."
        )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
