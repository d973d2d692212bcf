"""``get_precision``: from (precision, device) to a new, ready precision object.

A call walks the resolver's parts in order, each in the file named after it, each lower one
unaware of those above it:

1. :mod:`mixprec._inputs` normalises the arguments (Lightning's aliases, "auto", device strings,
   ``torch.device``, Lightning accelerators; None/"auto" for the best device present);
2. :mod:`mixprec._policies` imports the candidate backends' policies and checks their answers;
3. :mod:`mixprec._presence` checks that the device is there before a usable answer counts;
4. :mod:`mixprec._selection` selects one backend (``backend=``, ``MIXPREC_BACKEND``, then status,
   priority and name), and :mod:`mixprec._auto` does so for each precision "auto" tries;
5. here, the chosen backend's policy builds the object.

The outcome of steps 1 to 4 is cached per registry generation as a *plan* keyed by the call's
arguments, so a warm call costs a few dictionary look-ups before the object is built.
:mod:`mixprec._explain` (``explain``) and :mod:`mixprec._listing` (``available``) report on the same
steps without building anything.

What a backend's ``create()`` raises names the backend: a :class:`PrecisionError` keeps its type
and gains the backend's name and distribution in its message; anything else becomes a
:class:`PluginError` that names them.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, overload

from mixprec._auto import auto, best_device
from mixprec._backend import Availability, Request
from mixprec._errors import OptionError, PluginError, PrecisionError, PrecisionWarning
from mixprec._import_lock import IMPORT_LOCK
from mixprec._inputs import arguments, canonical_precision, check_target, requested_device

# Record is imported from here by mixprec.testing; it lives with available() in _listing.
from mixprec._listing import Record
from mixprec._policies import Caches, current, policy
from mixprec._presence import probe
from mixprec._registry import Registered, Snapshot
from mixprec._selection import select
from mixprec._telemetry import TELEMETRY_OPTIONS, Settings, manifest, settings

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision
    from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

__all__ = ["Record", "get_precision"]


def _plan(
    snap: Snapshot,
    caches: Caches,
    precision: str | int,
    device: object,
    backend: str | None,
    target: str,
    strategy: str | None,
) -> tuple[Registered, Request]:
    """The backend and the request for a call, cached when the device is given as a string or None."""
    key = None
    if device is None or type(device) is str:
        # The arguments are exact str/int values here (see _inputs.arguments), so equal keys mean equal calls.
        key = (precision, device, backend, target, strategy, os.environ.get("MIXPREC_BACKEND"))
        plan = caches.plans.get(key)
        if plan is not None:
            return plan
    check_target(target)
    name = canonical_precision(precision, snap)
    dev = requested_device(device, snap) or best_device(snap, caches)
    family = _family(strategy, target)
    if name == "auto":
        found = auto(snap, caches, dev, backend, target, family)
        if found.taken is None:
            assert found.error is not None
            raise found.error
        name, choice = found.steps[found.taken]
    else:
        choice = select(snap, caches, name, dev, backend, target, family)
        if choice.error is not None:
            raise choice.error
    assert choice.chosen is not None
    plan = (choice.chosen, Request(name, dev, choice.chosen.backend.name, target, strategy))  # type: ignore[arg-type]
    if key is not None:
        caches.plans[key] = plan
    return plan


def _family(strategy: str | None, target: str) -> str | None:
    """The strategy family of ``strategy`` (see ``mixprec.precision.strategy_family``); lightning is imported only for
    a strategy named."""
    if strategy is None or strategy == "auto":
        return None
    with IMPORT_LOCK:  # looking a strategy up imports lightning: see mixprec._import_lock
        from mixprec.precision import family_of

    return family_of(strategy, target)


@overload
def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: Literal["fabric"] = "fabric",
    strategy: str | None = None,
    model: Any = None,
    example: Any = None,
    **options: Any,
) -> Precision: ...


@overload
def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: Literal["trainer"],
    strategy: str | None = None,
    model: Any = None,
    example: Any = None,
    **options: Any,
) -> TrainerPrecision: ...


@overload
def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: str,
    strategy: str | None = None,
    model: Any = None,
    example: Any = None,
    **options: Any,
) -> Precision | TrainerPrecision: ...


def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: str = "fabric",
    strategy: str | None = None,
    model: Any = None,
    example: Any = None,
    **options: Any,
) -> Precision | TrainerPrecision:
    """A new, ready precision object for ``Fabric(plugins=[...])`` (or the Trainer, ``target="trainer"``).

    Args:
        precision: "16-mixed", "bf16-mixed", "16-true", "bf16-true", "32-true", "64-true", "fp8-mixed",
            Lightning's aliases (16, "16", "bf16", 32, "32", 64, "64"), a precision a backend registers,
            or "auto": the fastest precision that is safe on the device (never "fp8-mixed"). Without
            ``model``, "auto" answers per hardware, not per model: it trusts what the backends say of
            the device. With ``model`` and ``example`` it is :func:`mixprec.tune`'s choice, measured
            on that model (cached on disk).
        device: "cpu", "cuda", "cuda:1", "mps", ..., a ``torch.device``, a Lightning accelerator;
            None or "auto" for the best device present. A device that is not there is an error.
        backend: force the backend of this name.
        target: "fabric" or "trainer".
        strategy: "fsdp" for a precision the FSDP strategy accepts; None for every other strategy.
        model, example: only with "auto": the model and one batch of its input, to measure with
            :func:`mixprec.tune` (its defaults; call ``tune`` itself for a loss, an optimizer or a budget).
        options: backend settings, e.g. the GradScaler's ``init_scale`` and ``growth_interval``; and for every
            precision mixprec's own: ``collapse_after`` (consecutive skipped steps that make a collapsed run,
            default 20), ``min_scale`` (a floor for the loss scale, default None), ``on_collapse`` ("warn" or
            "raise"), ``locate_overflow`` (True: find the first module whose output or gradient overflows) and
            ``overflow_margin`` (default 0.1).

    Raises:
        PrecisionError: for anything the caller can fix; the message says how.
        TypeError: for an argument of the wrong type.
    """
    if model is not None or example is not None:
        from mixprec._tune import tuned_precision

        return tuned_precision(precision, device, backend, target, strategy, model, example, options)
    precision, backend, target, strategy = arguments(precision, backend, target, strategy)
    snap, caches = current()
    reg, request = _plan(snap, caches, precision, device, backend, target, strategy)
    ours = {name: options.pop(name) for name in TELEMETRY_OPTIONS if name in options}
    watching = settings(ours)
    if options:
        request = dataclasses.replace(request, options=options)
    module = policy(reg, caches)
    if isinstance(module, PluginError):
        raise module
    availability = probe(reg, request.precision, request.device, snap, caches)
    if availability.status == "slow":
        warnings.warn(_slow_warning(snap, caches, request, availability), PrecisionWarning, stacklevel=2)
    obj = _create(module, reg, request)
    _check_created(obj, reg, request)
    obj.mixprec_backend = reg.backend.name
    _stamp(obj, reg, request, watching, ours)
    return obj  # type: ignore[no-any-return]


def _stamp(obj: Any, reg: Registered, request: Request, watching: Settings, given: dict[str, Any]) -> None:
    """Give the object its manifest (which precision, backend and versions made it) and its telemetry options."""
    stamp = getattr(obj, "_stamp_telemetry", None)
    if stamp is None:
        if given:
            raise OptionError(
                f"{_origin(reg)} built a {type(obj).__name__}, which records no telemetry, so it cannot take"
                f" {sorted(given)}. Its authors can subclass mixprec.precision.AutocastPrecision or put"
                " mixprec.precision.ScalerGuard first among its bases; or pass backend= to use another one."
            )
        return
    stamp(manifest(request.precision, reg.backend.name, reg.plugin.distribution, reg.plugin.version), watching)


def _slow_warning(snap: Snapshot, caches: Caches, request: Request, availability: Availability) -> str:
    """Why a slow precision was built anyway, and what "auto" would take on the device instead."""
    found = auto(snap, caches, request.device, None, request.target)
    instead = (
        f" get_precision('auto') takes {found.steps[found.taken][0]!r} here."
        if found.taken is not None and found.steps[found.taken][0] != request.precision
        else ""
    )
    return f"{request.precision!r} on {request.device} is slow here, slower than fp32 ({availability.reason}).{instead}"


def _create(module: ModuleType, reg: Registered, request: Request) -> Any:
    """The policy's ``create(request)``, with what it raises naming the backend that raised it."""
    try:
        with IMPORT_LOCK:  # create() imports lightning the first time: see mixprec._import_lock
            return module.create(request)
    except PrecisionError as exc:
        origin, message = _origin(reg), str(exc)
        if not message.startswith(origin):
            exc.args = (f"{origin}: {message}",)
        raise
    except Exception as exc:
        raise PluginError(
            f"{_origin(reg)} failed to build {request.precision!r} on {request.device}: its create() raised"
            f" {type(exc).__name__}: {exc}. Report this to the backend's authors; pass backend= to use another one."
        ) from exc


def _origin(reg: Registered) -> str:
    return f"Backend {reg.backend.name!r} ({reg.plugin})"


def _check_created(obj: object, reg: Registered, request: Request) -> None:
    with IMPORT_LOCK:
        if request.target == "trainer":
            from lightning.pytorch.plugins.precision import Precision as Expected
        else:
            from lightning.fabric.plugins.precision import Precision as Expected  # type: ignore[assignment]
    if not isinstance(obj, Expected):
        raise PluginError(
            f"Backend {reg.backend.name!r} ({reg.plugin}) returned {type(obj).__name__} for"
            f" {request.precision!r}, which is not a {Expected.__module__}.Precision; report this to its authors."
        )
