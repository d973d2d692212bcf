"""From (precision, device) to a ready precision object: ``get_precision``, ``explain``, ``available``.

Resolution has three steps, each cached per registry generation so that a warm call costs a few
dictionary look-ups before the object is built:

1. normalise the precision (Lightning's aliases, "auto") and the device (strings, ``torch.device``,
   Lightning accelerators, None/"auto" for the best device present);
2. collect the *candidates*: backends that offer the precision on the device type;
3. select one: ``backend=`` if given, else ``MIXPREC_BACKEND`` if it names a candidate, else,
   among the backends for the device type itself (those serving every device type, the core's
   "true" precisions, only where there is none), the first usable candidate ordered by status
   ("available" before "slow"), then priority (higher first), then backend name (alphabetical).
   No candidate is ever passed over in silence: an explicitly chosen backend that cannot run here
   is an error, and ``explain`` shows every step.

"auto" selects a backend for each of "bf16-mixed", "16-mixed" and "32-true" in turn and takes the
first precision whose selected backend reports "available": a precision that is merely emulated
("slow") is never chosen.

A backend whose policy module fails (it does not import, lacks a function, or its
``availability()`` raises) has the status "failed" and is skipped like an unavailable one; it is
warned about once, or is an error under ``MIXPREC_STRICT``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

from mixprec._backend import ALIASES, ANY_DEVICE, Availability, Device, Request
from mixprec._errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    DeviceError,
    PluginError,
    PrecisionError,
    PrecisionWarning,
    UnknownPrecisionError,
)
from mixprec._registry import Registered, Snapshot, registry

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision
    from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

__all__ = [
    "AUTO_ORDER",
    "KNOWN_DISTRIBUTIONS",
    "Candidate",
    "Explanation",
    "Record",
    "available",
    "explain",
    "get_precision",
]

#: The precisions every user may ask for, whether or not a backend for the device is installed.
STANDARD_PRECISIONS = ("16-mixed", "bf16-mixed", "16-true", "bf16-true", "32-true", "64-true")
#: What "auto" tries, fastest first; the first one that is available (not merely slow) wins.
AUTO_ORDER = ("bf16-mixed", "16-mixed", "32-true")
#: Device types with a known backend distribution, for "pip install ..." hints.
KNOWN_DISTRIBUTIONS = {"cpu": "mixprec-cpu", "cuda": "mixprec-cuda", "mps": "mixprec-mps"}
#: Device types torch knows, accepted even when no backend registers them (the "true" precisions run there).
TORCH_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu", "xla", "hpu", "mtia", "meta", "privateuseone"})
_ACCELERATOR_DEVICE_TYPES = {"tpu": "xla", "gpu": "cuda"}
_TARGETS = ("fabric", "trainer")
_INTEGER_PRECISIONS = (16, 32, 64)
_POLICY_STATUSES = ("available", "slow", "unavailable")
_POLICY_FUNCTIONS = ("availability", "create", "device_count")
_RANKING = (
    "backends for the device type before those for every device type; among them the first usable"
    " by status (available before slow), then priority (higher first), then name"
)


@dataclass(frozen=True)
class Candidate:
    """One backend considered for a request, with what its policy said."""

    backend: str
    precision: str
    device: str
    priority: int
    status: str
    reason: str
    distribution: str | None
    chosen: bool = False
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    """Every candidate considered for a request and why one was chosen; ``str()`` reads as a report."""

    request: str
    device: str
    precision: str | None
    backend: str | None
    candidates: tuple[Candidate, ...]
    rule: str
    error: str | None = None

    def __str__(self) -> str:
        lines = [f"mixprec: {self.request} on {self.device}"]
        for c in self.candidates:
            mark = "->" if c.chosen else "  "
            reason = f": {c.reason}" if c.reason else ""
            note = f" [{c.note}]" if c.note else ""
            lines.append(
                f" {mark} {c.precision:<11} {c.backend:<12} priority {c.priority:>5}  {c.status}{reason}{note}"
            )
        lines.append(f"rule: {self.rule}")
        if self.error is not None:
            lines.append(f"no choice: {self.error}")
        else:
            lines.append(f"chosen: {self.precision!r} from backend {self.backend!r}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Record:
    """One row of :func:`available`: a backend, a device type, a precision and its status here."""

    backend: str
    device_type: str
    precision: str
    status: str
    reason: str
    priority: int
    distribution: str | None
    version: str | None
    plugin: str


class _Caches:
    """What resolution learned for one registry generation: policies, their answers, finished plans."""

    __slots__ = ("best_device", "generation", "plans", "policies", "probes", "reported", "strict")

    def __init__(self, generation: int = -1, strict: bool = False) -> None:
        self.generation = generation
        self.strict = strict
        self.policies: dict[str, ModuleType | PluginError] = {}
        self.probes: dict[tuple[str, str, Device], Availability] = {}
        self.plans: dict[tuple[Any, ...], tuple[Registered, Request]] = {}
        self.best_device: Device | None = None
        #: backends whose failed policy has been warned about.
        self.reported: set[str] = set()


_caches = _Caches()


def _current() -> tuple[Snapshot, _Caches]:
    global _caches
    snap = registry.snapshot()
    caches = _caches
    if caches.generation != snap.generation:
        caches = _Caches(generation=snap.generation, strict=snap.strict)
        _caches = caches
    return snap, caches


# --- normalising the inputs -------------------------------------------------------------------


def _check_types(precision: object, backend: object, target: object, strategy: object) -> None:
    """Refuse arguments of the wrong type before they are used, e.g. as cache keys."""
    if isinstance(precision, bool) or not isinstance(precision, (str, int)):
        raise TypeError(f"precision must be a str or an int such as 'bf16-mixed' or 32, not {type(precision).__name__}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, not {type(backend).__name__}")
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, not {type(target).__name__}")
    if strategy is not None and not isinstance(strategy, str):
        raise TypeError(f"strategy must be a str such as 'fsdp' or None, not {type(strategy).__name__}")


def _known_precisions(snap: Snapshot) -> set[str]:
    return {p for r in snap.backends.values() for p in r.backend.precisions}.union(STANDARD_PRECISIONS)


def _precision(value: str | int, snap: Snapshot) -> str:
    """The canonical precision string for ``value``, "auto", or an UnknownPrecisionError."""
    known = _known_precisions(snap)
    valid = (
        f"Valid precisions: {', '.join(sorted(known))}, 'auto', and Lightning's aliases"
        f" {', '.join(repr(a) for a in ALIASES)} (and 16, 32, 64)."
    )
    if isinstance(value, int):
        if value in _INTEGER_PRECISIONS:
            return ALIASES[str(value)]
        shown = repr(value) if value.bit_length() <= 64 else f"(an integer of {value.bit_length()} bits)"
        raise UnknownPrecisionError(f"Unknown precision {shown}: the integer precisions are 16, 32 and 64. {valid}")
    text = ALIASES.get(value, value)
    if text == "auto" or text in known:
        return text
    close = difflib.get_close_matches(text.lower(), [*known, *ALIASES, "auto"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownPrecisionError(f"Unknown precision {value!r}.{hint} {valid}")


def _known_device_types(snap: Snapshot) -> set[str]:
    types = {r.backend.device_type for r in snap.backends.values()} - {ANY_DEVICE}
    return types | TORCH_DEVICE_TYPES | set(KNOWN_DISTRIBUTIONS)


def _device(value: object, snap: Snapshot) -> Device | None:
    """The requested device, or None for "pick the best device present"."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == "auto":
            return None
        device = Device.parse(value)
    elif type(value).__name__ == "device" and type(value).__module__ == "torch":
        device = Device(value.type, value.index)  # type: ignore[attr-defined]
    else:
        accelerator_type = _accelerator_device_type(value)
        if accelerator_type is None:
            raise TypeError(
                "device must be a str such as 'cuda:1', a torch.device, a Lightning Accelerator or None,"
                f" not {type(value).__name__}"
            )
        device = Device(accelerator_type)
    known = _known_device_types(snap)
    if device.type not in known:
        if device.type == "gpu":
            raise DeviceError("'gpu' is not a torch device type: use 'cuda' (NVIDIA, AMD) or 'mps' (Apple).")
        close = difflib.get_close_matches(device.type, sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DeviceError(
            f"Unknown device type {device.type!r} in {str(value)!r}.{hint} Known device types:"
            f" {', '.join(sorted(known))}; a backend for another type registers it through the"
            " 'mixprec.backends' entry point."
        )
    return device


def _accelerator_device_type(value: object) -> str | None:
    """The device type of a Lightning accelerator object, by the name it is registered under."""
    # Only look where Lightning is already imported: whoever holds an accelerator object has imported it.
    for package in ("lightning.fabric", "lightning_fabric"):
        module = sys.modules.get(f"{package}.accelerators")
        if module is None or not isinstance(value, module.Accelerator):
            continue
        registries = [module.ACCELERATOR_REGISTRY]
        trainer = sys.modules.get(package.replace("fabric", "pytorch") + ".accelerators")
        if trainer is not None:
            registries.append(trainer.AcceleratorRegistry)
        for exact in (True, False):
            for reg in registries:
                for name, entry in reg.items():
                    cls = entry["accelerator"]
                    if (type(value) is cls) if exact else isinstance(value, cls):
                        return str(_ACCELERATOR_DEVICE_TYPES.get(name, name))
        raise DeviceError(
            f"{type(value).__name__} is a Lightning accelerator that is not in Lightning's accelerator"
            " registry, so its device type is unknown: pass the device as a string such as 'cuda'."
        )
    return None


# --- asking backends ----------------------------------------------------------------------------


def _policy_failed(reg: Registered, caches: _Caches, problem: str) -> Availability:
    """Report a backend whose policy failed: an error under MIXPREC_STRICT, else a warning once."""
    message = f"backend {reg.backend.name!r} of {reg.plugin} failed: {problem}"
    if caches.strict:
        raise PluginError(f"MIXPREC_STRICT is set and the {message}")
    if reg.backend.name not in caches.reported:
        caches.reported.add(reg.backend.name)
        warnings.warn(f"The {message}; it is skipped.", PrecisionWarning, stacklevel=2)
    return Availability("failed", problem)


def _policy(reg: Registered, caches: _Caches) -> ModuleType | PluginError:
    """The backend's policy module, imported at first use, or the error that it cannot be used."""
    name = reg.backend.name
    found = caches.policies.get(name)
    if found is None:
        module_name = reg.backend.policy
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            problem = f"its policy module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        else:
            missing = [f for f in _POLICY_FUNCTIONS if not callable(getattr(module, f, None))]
            problem = f"its policy module {module_name!r} lacks {', '.join(missing)}" if missing else ""
        if problem:
            _policy_failed(reg, caches, problem)
            found = PluginError(f"Backend {name!r} ({reg.plugin}) cannot be used: {problem}.")
        else:
            found = module
        caches.policies[name] = found
    return found


def _ask(policy: ModuleType, precision: str, device: Device) -> Availability | str:
    """The policy's answer for ``precision`` on ``device``, or what is wrong with it."""
    try:
        answer = policy.availability(precision, device)
    except Exception as exc:
        return f"availability() raised {type(exc).__name__}: {exc}"
    if not isinstance(answer, Availability):
        return f"availability() returned {answer!r}, not a mixprec.Availability"
    if answer.status not in _POLICY_STATUSES:
        return f"availability() returned the status {answer.status!r}; a policy answers one of {_POLICY_STATUSES}"
    return answer


def _probe(reg: Registered, precision: str, device: Device, caches: _Caches) -> Availability:
    key = (reg.backend.name, precision, device)
    found = caches.probes.get(key)
    if found is None:
        policy = _policy(reg, caches)
        if isinstance(policy, PluginError):
            found = Availability("failed", str(policy))
        else:
            answer = _ask(policy, precision, device)
            found = answer if isinstance(answer, Availability) else _policy_failed(reg, caches, answer)
        caches.probes[key] = found
    return found


def _device_count(reg: Registered, caches: _Caches) -> int:
    policy = _policy(reg, caches)
    if isinstance(policy, PluginError):
        return 0
    try:
        count = policy.device_count()
    except Exception as exc:
        _policy_failed(reg, caches, f"device_count() raised {type(exc).__name__}: {exc}")
        return 0
    if not isinstance(count, int):
        _policy_failed(reg, caches, f"device_count() returned {count!r}, not an int")
        return 0
    return count


def _best_device(snap: Snapshot, caches: _Caches) -> Device:
    """The device "auto" means: accelerators before the CPU, by their best backend's priority, then name."""
    if caches.best_device is None:
        best: dict[str, int] = {}
        for reg in snap.backends.values():
            kind = reg.backend.device_type
            if kind not in (ANY_DEVICE, "cpu") and _device_count(reg, caches) > 0:
                best[kind] = max(best.get(kind, reg.backend.priority), reg.backend.priority)
        ranked = sorted(best, key=lambda kind: (-best[kind], kind))
        caches.best_device = Device(ranked[0] if ranked else "cpu")
    return caches.best_device


def _candidates(snap: Snapshot, precision: str, device: Device) -> list[Registered]:
    return [r for r in snap.for_device_type(device.type) if precision in r.backend.precisions]


def _offers(snap: Snapshot, name: str, precision: str, device: Device) -> bool:
    return any(r.backend.name == name for r in _candidates(snap, precision, device))


def _order(reg: Registered, availability: Availability) -> tuple[int, int, str]:
    return (0 if availability.status == "available" else 1, -reg.backend.priority, reg.backend.name)


# --- selection ----------------------------------------------------------------------------------


class _Choice(NamedTuple):
    """The outcome of selecting a backend for one precision on one device."""

    candidates: list[tuple[Registered, Availability]]
    chosen: Registered | None
    rule: str
    error: PrecisionError | None
    #: "backend=" or "MIXPREC_BACKEND" when a name, not the ranking, decided.
    source: str | None = None

    @property
    def status(self) -> str | None:
        """The chosen backend's status; None when nothing was chosen."""
        return next((a.status for r, a in self.candidates if r is self.chosen), None)


def _select(snap: Snapshot, caches: _Caches, precision: str, device: Device, backend: str | None) -> _Choice:
    found = _candidates(snap, precision, device)
    probed = [(r, _probe(r, precision, device, caches)) for r in found]
    if not found:
        return _Choice(probed, None, _RANKING, _not_found(snap, precision, device))
    if backend is not None:
        return _forced(snap, probed, precision, device, backend, "backend=")
    from_env = os.environ.get("MIXPREC_BACKEND", "").strip()
    if from_env and any(r.backend.name == from_env for r, _ in probed):
        return _forced(snap, probed, precision, device, from_env, "MIXPREC_BACKEND")
    # A backend for the device type itself knows the device; one for every device type (the core's
    # "true" precisions) is the fallback where none does, never a way around an honest "slow".
    ranked = [(r, a) for r, a in probed if r.backend.device_type != ANY_DEVICE] or probed
    usable = sorted(((r, a) for r, a in ranked if a.usable), key=lambda pair: _order(*pair))
    if not usable:
        reasons = "; ".join(f"backend {r.backend.name!r}: {a.reason or a.status}" for r, a in probed)
        error = BackendUnavailableError(f"{precision!r} cannot run on {device} here. {reasons}.")
        return _Choice(probed, None, _RANKING, error)
    return _Choice(probed, usable[0][0], _RANKING, None)


def _forced(
    snap: Snapshot,
    probed: list[tuple[Registered, Availability]],
    precision: str,
    device: Device,
    name: str,
    source: str,
) -> _Choice:
    """The choice when ``source`` names backend ``name``: that backend, or an error saying why not."""
    rule = f"{source} names {name!r}"
    for reg, availability in probed:
        if reg.backend.name == name:
            if availability.usable:
                return _Choice(probed, reg, rule, None, source)
            unusable = BackendUnavailableError(
                f"Backend {name!r} (chosen by {source}) cannot run {precision!r} on {device} here:"
                f" {availability.reason or availability.status}."
            )
            return _Choice(probed, None, rule, unusable, source)
    if name not in snap.backends:
        return _Choice(probed, None, rule, _unknown_backend(snap, name, source), source)
    other = snap.backends[name].backend
    offered = ", ".join(r.backend.name for r, _ in probed)
    error = BackendNotFoundError(
        f"Backend {name!r} (from {source}) serves device type {other.device_type!r} with"
        f" {', '.join(other.precisions)}; it does not offer {precision!r} on {device}."
        f" Backends that do: {offered}."
    )
    return _Choice(probed, None, rule, error, source)


def _unknown_backend(snap: Snapshot, name: str, source: str) -> BackendNotFoundError:
    close = difflib.get_close_matches(name, sorted(snap.backends), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return BackendNotFoundError(
        f"Unknown backend {name!r} (from {source}).{hint} Installed backends: {', '.join(sorted(snap.backends))}."
    )


def _not_found(snap: Snapshot, precision: str, device: Device) -> PrecisionError:
    distribution = KNOWN_DISTRIBUTIONS.get(device.type)
    others = sorted(
        f"{r.backend.name} ({r.backend.device_type})"
        for r in snap.backends.values()
        if precision in r.backend.precisions
    )
    elsewhere = f" Backends offering it on other devices: {', '.join(others)}." if others else ""
    if distribution is None:
        return BackendNotFoundError(
            f"No installed backend offers {precision!r} on {device}, and mixprec knows no distribution"
            f" for device type {device.type!r}: a backend for it registers through the 'mixprec.backends'"
            f" entry point (see docs/writing-a-backend.md).{elsewhere}"
        )
    for failure in snap.failures:
        if failure.plugin.distribution == distribution:
            return BackendNotFoundError(
                f"No backend offers {precision!r} on {device}: {distribution} is installed but {failure}."
            )
    for plugin, why in snap.skipped:
        if plugin.distribution == distribution:
            return BackendNotFoundError(
                f"No backend offers {precision!r} on {device}: {distribution} is installed but not loaded ({why})."
            )
    if any(r.plugin.distribution == distribution for r in snap.backends.values()):
        return BackendNotFoundError(f"{distribution} does not offer {precision!r} on {device}.{elsewhere}")
    return BackendNotFoundError(f"No backend for device type {device.type!r} is installed: pip install {distribution}")


class _Auto(NamedTuple):
    """What "auto" did: a choice for each precision of AUTO_ORDER, and the one it took."""

    steps: list[tuple[str, _Choice]]
    taken: int | None
    error: PrecisionError | None
    rule: str


def _auto(snap: Snapshot, caches: _Caches, device: Device, backend: str | None) -> _Auto:
    """Take the first precision of AUTO_ORDER whose selected backend is available, else "32-true" if usable."""
    if backend is not None and not any(_offers(snap, backend, p, device) for p in AUTO_ORDER):
        if backend not in snap.backends:
            error: PrecisionError = _unknown_backend(snap, backend, "backend=")
        else:
            error = BackendNotFoundError(
                f"Backend {backend!r} offers none of the precisions 'auto' chooses from"
                f" ({', '.join(AUTO_ORDER)}) on {device}: ask it for a precision it offers, or leave backend unset."
            )
        return _Auto([], None, error, "")
    # backend= applies to the precisions that backend offers; the others are selected as usual.
    steps = [
        (p, _select(snap, caches, p, device, backend if backend and _offers(snap, backend, p, device) else None))
        for p in AUTO_ORDER
    ]
    rule = f"auto takes the first of {', '.join(AUTO_ORDER)} whose selected backend is available here, not merely slow"
    taken = next((i for i, (_, choice) in enumerate(steps) if choice.status == "available"), None)
    if taken is None and steps[-1][1].chosen is not None:
        taken = len(steps) - 1
        rule = f"auto falls back to {AUTO_ORDER[-1]!r}: nothing is available here without being slow"
    if taken is None:
        return _Auto(steps, None, steps[-1][1].error, rule)
    precision, choice = steps[taken]
    return _Auto(steps, taken, None, f"{rule}; for {precision!r}: {choice.rule}")


def _plan(
    snap: Snapshot,
    caches: _Caches,
    precision: str | int,
    device: object,
    backend: str | None,
    target: str,
    strategy: str | None,
) -> tuple[Registered, Request]:
    """The backend and the request for a call, cached when the device is given as a string or None."""
    key = None
    if device is None or type(device) is str:
        # The type is part of the key: 16 and 16.0 are equal dict keys, and only one is a valid precision.
        key = (type(precision), precision, device, backend, target, strategy, os.environ.get("MIXPREC_BACKEND"))
        plan = caches.plans.get(key)
        if plan is not None:
            return plan
    if target not in _TARGETS:
        raise PrecisionError(f"Unknown target {target!r}: use 'fabric' (the default) or 'trainer'.")
    name = _precision(precision, snap)
    dev = _device(device, snap) or _best_device(snap, caches)
    if name == "auto":
        auto = _auto(snap, caches, dev, backend)
        if auto.taken is None:
            assert auto.error is not None
            raise auto.error
        name, choice = auto.steps[auto.taken]
    else:
        choice = _select(snap, caches, name, dev, backend)
        if choice.error is not None:
            raise choice.error
    assert choice.chosen is not None
    plan = (choice.chosen, Request(name, dev, choice.chosen.backend.name, target, strategy))  # type: ignore[arg-type]
    if key is not None:
        caches.plans[key] = plan
    return plan


# --- the public functions -----------------------------------------------------------------------


@overload
def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: Literal["fabric"] = "fabric",
    strategy: str | None = None,
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
    **options: Any,
) -> Precision | TrainerPrecision: ...


def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: str = "fabric",
    strategy: str | None = None,
    **options: Any,
) -> Precision | TrainerPrecision:
    """A new, ready precision object for ``Fabric(plugins=[...])`` (or the Trainer, ``target="trainer"``).

    Args:
        precision: "16-mixed", "bf16-mixed", "16-true", "bf16-true", "32-true", "64-true", Lightning's
            aliases (16, "16", "bf16", 32, "32", 64, "64"), a precision a backend registers, or "auto":
            the fastest precision that is safe on the device.
        device: "cpu", "cuda", "cuda:1", "mps", ..., a ``torch.device``, a Lightning accelerator;
            None or "auto" for the best device present.
        backend: force the backend of this name.
        target: "fabric" or "trainer".
        strategy: "fsdp" for a precision the FSDP strategy accepts; None for every other strategy.
        options: backend settings, e.g. the GradScaler's ``init_scale`` and ``growth_interval``.

    Raises:
        PrecisionError: for anything the caller can fix; the message says how.
        TypeError: for an argument of the wrong type.
    """
    _check_types(precision, backend, target, strategy)
    snap, caches = _current()
    reg, request = _plan(snap, caches, precision, device, backend, target, strategy)
    if options:
        request = dataclasses.replace(request, options=options)
    policy = _policy(reg, caches)
    if isinstance(policy, PluginError):
        raise policy
    availability = _probe(reg, request.precision, request.device, caches)
    if availability.status == "slow":
        warnings.warn(_slow_warning(snap, caches, request, availability), PrecisionWarning, stacklevel=2)
    obj = policy.create(request)
    _check_created(obj, reg, request)
    obj.mixprec_backend = reg.backend.name
    return obj  # type: ignore[no-any-return]


def _slow_warning(snap: Snapshot, caches: _Caches, request: Request, availability: Availability) -> str:
    """Why a slow precision was built anyway, and what "auto" would take on the device instead."""
    auto = _auto(snap, caches, request.device, None)
    instead = (
        f" get_precision('auto') takes {auto.steps[auto.taken][0]!r} here."
        if auto.taken is not None and auto.steps[auto.taken][0] != request.precision
        else ""
    )
    return f"{request.precision!r} on {request.device} is slow here, slower than fp32 ({availability.reason}).{instead}"


def _check_created(obj: object, reg: Registered, request: Request) -> None:
    if request.target == "trainer":
        from lightning.pytorch.plugins.precision import Precision as Expected
    else:
        from lightning.fabric.plugins.precision import Precision as Expected  # type: ignore[assignment]
    if not isinstance(obj, Expected):
        raise PluginError(
            f"Backend {reg.backend.name!r} ({reg.plugin}) returned {type(obj).__name__} for"
            f" {request.precision!r}, which is not a {Expected.__module__}.Precision; report this to its authors."
        )


def explain(precision: str | int = "auto", device: Any = None, *, backend: str | None = None) -> Explanation:
    """Every candidate for ``precision`` on ``device``, what its policy said, and which one would be chosen."""
    _check_types(precision, backend, "fabric", None)
    snap, caches = _current()
    name = _precision(precision, snap)
    dev = _device(device, snap) or _best_device(snap, caches)
    if name == "auto":
        return _explain_auto(_auto(snap, caches, dev, backend), dev)
    choice = _select(snap, caches, name, dev, backend)
    candidates = tuple(
        _candidate(r, a, name, dev, r is choice.chosen, _note(choice, r, a)) for r, a in choice.candidates
    )
    return Explanation(
        repr(name),
        str(dev),
        name if choice.chosen else None,
        choice.chosen.backend.name if choice.chosen else None,
        candidates,
        choice.rule,
        None if choice.error is None else str(choice.error),
    )


def _explain_auto(auto: _Auto, device: Device) -> Explanation:
    candidates: list[Candidate] = []
    for i, (precision, choice) in enumerate(auto.steps):
        for reg, a in choice.candidates:
            if auto.taken is not None and i > auto.taken:
                note = f"not needed: auto took {auto.steps[auto.taken][0]!r}"
            elif reg is choice.chosen and i != auto.taken:
                note = "selected, but slower than fp32 here: auto passes it over"
            else:
                note = _note(choice, reg, a)
            candidates.append(_candidate(reg, a, precision, device, i == auto.taken and reg is choice.chosen, note))
    if auto.taken is None:
        assert auto.error is not None
        return Explanation("'auto'", str(device), None, None, tuple(candidates), auto.rule, str(auto.error))
    precision, choice = auto.steps[auto.taken]
    assert choice.chosen is not None
    return Explanation("'auto'", str(device), precision, choice.chosen.backend.name, tuple(candidates), auto.rule)


def _note(choice: _Choice, reg: Registered, a: Availability) -> str:
    """Why a candidate was passed over (empty for the chosen one)."""
    if reg is choice.chosen:
        return ""
    if not a.usable:
        return "cannot run here"
    if choice.source is not None:
        return f"not the one {choice.source} names"
    if reg.backend.device_type == ANY_DEVICE and any(r.backend.device_type != ANY_DEVICE for r, _ in choice.candidates):
        return "fallback: a backend for the device type offers it"
    return f"outranked by {choice.chosen.backend.name!r}" if choice.chosen is not None else ""


def _candidate(reg: Registered, a: Availability, precision: str, device: Device, chosen: bool, note: str) -> Candidate:
    return Candidate(
        reg.backend.name,
        precision,
        str(device),
        reg.backend.priority,
        a.status,
        a.reason,
        reg.plugin.distribution,
        chosen,
        note,
    )


def available(device: Any = None) -> list[Record]:
    """A record per backend x device type x precision with its status here, and one per failed plugin.

    With ``device``, only backends serving that device are asked, about that device.
    """
    snap, caches = _current()
    dev = _device(device, snap)
    records: list[Record] = []
    for reg in sorted(
        snap.backends.values(), key=lambda r: (r.backend.device_type, -r.backend.priority, r.backend.name)
    ):
        kind = reg.backend.device_type
        if dev is not None and kind not in (dev.type, ANY_DEVICE):
            continue
        probe_device = dev or Device("cpu" if kind == ANY_DEVICE else kind)
        for precision in reg.backend.precisions:
            a = _probe(reg, precision, probe_device, caches)
            records.append(
                Record(
                    reg.backend.name,
                    kind,
                    precision,
                    a.status,
                    a.reason,
                    reg.backend.priority,
                    reg.plugin.distribution,
                    reg.plugin.version,
                    reg.plugin.name,
                )
            )
    for failure in snap.failures:
        p = failure.plugin
        records.append(Record(p.name, "", "", "failed", failure.error, 0, p.distribution, p.version, p.name))
    return records
