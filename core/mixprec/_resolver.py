"""From (precision, device) to a ready precision object: ``get_precision``, ``explain``, ``available``.

Resolution has three steps, each cached per registry generation so that a warm call costs a few
dictionary look-ups before the object is built:

1. normalise the precision (Lightning's aliases, "auto") and the device (strings, ``torch.device``,
   Lightning accelerators, None/"auto" for the best device present);
2. collect the *candidates*: backends that offer the precision on the device type;
3. select one: ``backend=`` if given, else ``MIXPREC_BACKEND`` if it names a candidate, else the
   first usable candidate ordered by status ("available" before "slow"), then priority (higher
   first), then backend name (alphabetical). No candidate is ever passed over in silence: an
   explicitly chosen backend that cannot run here is an error, and ``explain`` shows every step.

"auto" tries "bf16-mixed", then "16-mixed", then "32-true", and takes the first whose selected
backend reports "available": a precision that is merely emulated ("slow") is never chosen.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mixprec._backend import ANY_DEVICE, Availability, Device, Request
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

__all__ = [
    "ALIASES",
    "AUTO_ORDER",
    "KNOWN_DISTRIBUTIONS",
    "Candidate",
    "Explanation",
    "Record",
    "available",
    "explain",
    "get_precision",
]

#: Lightning's aliases, with Lightning's meaning.
ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
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
        if self.error is not None:
            lines.append(f"no choice: {self.error}")
        else:
            lines.append(f"chosen: {self.precision!r} from backend {self.backend!r} ({self.rule})")
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


@dataclass
class _Caches:
    generation: int = -1
    policies: dict[str, ModuleType | Exception] = field(default_factory=dict)
    probes: dict[tuple[str, str, Device], Availability] = field(default_factory=dict)
    plans: dict[tuple[Any, ...], tuple[Registered, Request]] = field(default_factory=dict)
    best_device: Device | None = None


_caches = _Caches()


def _current() -> tuple[Snapshot, _Caches]:
    global _caches
    snap = registry.snapshot()
    caches = _caches
    if caches.generation != snap.generation:
        caches = _Caches(generation=snap.generation)
        _caches = caches
    return snap, caches


# --- normalising the inputs -------------------------------------------------------------------


def _known_precisions(snap: Snapshot) -> set[str]:
    return {p for r in snap.backends.values() for p in r.backend.precisions}.union(STANDARD_PRECISIONS)


def _precision(value: object, snap: Snapshot) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"precision must be a str or an int such as 'bf16-mixed' or 32, not {type(value).__name__}")
    text = str(value)
    text = ALIASES.get(text, text)
    known = _known_precisions(snap)
    if text == "auto" or text in known:
        return text
    valid = sorted(known)
    close = difflib.get_close_matches(text.lower(), [*valid, *ALIASES, "auto"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownPrecisionError(
        f"Unknown precision {value!r}.{hint} Valid precisions: {', '.join(valid)}, 'auto',"
        f" and Lightning's aliases {', '.join(repr(a) for a in ALIASES)} (and 16, 32, 64)."
    )


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


def _policy(reg: Registered, caches: _Caches) -> ModuleType | Exception:
    name = reg.backend.name
    found = caches.policies.get(name)
    if found is None:
        try:
            module = importlib.import_module(reg.backend.policy)
            missing = [f for f in ("availability", "create", "device_count") if not callable(getattr(module, f, None))]
            found = (
                PluginError(f"policy module {reg.backend.policy!r} lacks {', '.join(missing)}") if missing else module
            )
        except Exception as exc:
            found = PluginError(f"policy module {reg.backend.policy!r} failed to import: {type(exc).__name__}: {exc}")
        caches.policies[name] = found
    return found


def _probe(reg: Registered, precision: str, device: Device, caches: _Caches) -> Availability:
    key = (reg.backend.name, precision, device)
    found = caches.probes.get(key)
    if found is None:
        policy = _policy(reg, caches)
        if isinstance(policy, Exception):
            found = Availability("failed", str(policy))
        else:
            try:
                found = policy.availability(precision, device)
                if not isinstance(found, Availability):
                    found = Availability("failed", f"availability() returned {found!r}, not a mixprec.Availability")
            except Exception as exc:
                found = Availability("failed", f"availability() raised {type(exc).__name__}: {exc}")
        caches.probes[key] = found
    return found


def _device_count(reg: Registered, caches: _Caches) -> int:
    policy = _policy(reg, caches)
    if isinstance(policy, Exception):
        return 0
    try:
        count = policy.device_count()
    except Exception:
        return 0
    return count if isinstance(count, int) else 0


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


def _order(reg: Registered, availability: Availability) -> tuple[int, int, str]:
    return (0 if availability.status == "available" else 1, -reg.backend.priority, reg.backend.name)


# --- selection ----------------------------------------------------------------------------------


@dataclass
class _Choice:
    candidates: list[tuple[Registered, Availability]]
    chosen: Registered | None
    rule: str
    error: PrecisionError | None


def _select(snap: Snapshot, caches: _Caches, precision: str, device: Device, backend: str | None) -> _Choice:
    found = _candidates(snap, precision, device)
    probed = [(r, _probe(r, precision, device, caches)) for r in found]
    if not found:
        return _Choice(probed, None, "", _not_found(snap, precision, device))
    if backend is not None:
        return _explicit(snap, probed, precision, device, backend, "backend=")
    from_env = os.environ.get("MIXPREC_BACKEND", "").strip()
    if from_env and any(r.backend.name == from_env for r, _ in probed):
        return _explicit(snap, probed, precision, device, from_env, "MIXPREC_BACKEND")
    usable = sorted(((r, a) for r, a in probed if a.usable), key=lambda pair: _order(*pair))
    if not usable:
        reasons = "; ".join(f"backend {r.backend.name!r}: {a.reason or a.status}" for r, a in probed)
        return _Choice(
            probed,
            None,
            "",
            BackendUnavailableError(f"{precision!r} cannot run on {device} here. {reasons}."),
        )
    rule = "the usable candidate first by status (available before slow), then priority, then name"
    return _Choice(probed, usable[0][0], rule, None)


def _explicit(
    snap: Snapshot,
    probed: list[tuple[Registered, Availability]],
    precision: str,
    device: Device,
    name: str,
    source: str,
) -> _Choice:
    for reg, availability in probed:
        if reg.backend.name == name:
            if availability.usable:
                return _Choice(probed, reg, f"chosen by {source}", None)
            return _Choice(
                probed,
                None,
                "",
                BackendUnavailableError(
                    f"Backend {name!r} (chosen by {source}) cannot run {precision!r} on {device} here:"
                    f" {availability.reason or availability.status}."
                ),
            )
    if name not in snap.backends:
        close = difflib.get_close_matches(name, sorted(snap.backends), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return _Choice(
            probed,
            None,
            "",
            BackendNotFoundError(
                f"Unknown backend {name!r} (from {source}).{hint}"
                f" Installed backends: {', '.join(sorted(snap.backends))}."
            ),
        )
    other = snap.backends[name].backend
    offered = ", ".join(r.backend.name for r, _ in probed)
    return _Choice(
        probed,
        None,
        "",
        BackendNotFoundError(
            f"Backend {name!r} (from {source}) serves device type {other.device_type!r} with"
            f" {', '.join(other.precisions)}; it does not offer {precision!r} on {device}."
            f" Backends that do: {offered}."
        ),
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


def _plan(
    precision: object, device: object, backend: str | None, target: str, strategy: str | None
) -> tuple[Registered, Request]:
    snap, caches = _current()
    env = os.environ.get("MIXPREC_BACKEND")
    key = (precision, device, backend, target, strategy, env) if isinstance(device, (str, type(None))) else None
    if key is not None:
        plan = caches.plans.get(key)
        if plan is not None:
            return plan
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str, not {type(backend).__name__}")
    if target not in _TARGETS:
        if not isinstance(target, str):
            raise TypeError(f"target must be a str, not {type(target).__name__}")
        raise PrecisionError(f"Unknown target {target!r}: use 'fabric' (the default) or 'trainer'.")
    if strategy is not None and not isinstance(strategy, str):
        raise TypeError(f"strategy must be a str such as 'fsdp' or None, not {type(strategy).__name__}")
    name = _precision(precision, snap)
    dev = _device(device, snap) or _best_device(snap, caches)
    if name == "auto":
        name, choice = _auto(snap, caches, dev, backend)
    else:
        choice = _select(snap, caches, name, dev, backend)
    if choice.error is not None:
        raise choice.error
    assert choice.chosen is not None
    plan = (choice.chosen, Request(name, dev, choice.chosen.backend.name, target, strategy))  # type: ignore[arg-type]
    if key is not None:
        caches.plans[key] = plan
    return plan


def _auto(snap: Snapshot, caches: _Caches, device: Device, backend: str | None) -> tuple[str, _Choice]:
    last: _Choice | None = None
    for precision in AUTO_ORDER:
        offered_by_backend = backend is not None and any(
            r.backend.name == backend for r in _candidates(snap, precision, device)
        )
        choice = _select(snap, caches, precision, device, backend if offered_by_backend else None)
        last = choice
        if choice.chosen is not None:
            status = next(a for r, a in choice.candidates if r is choice.chosen).status
            if status == "available":
                return precision, choice
    assert last is not None
    return AUTO_ORDER[-1], last


# --- the public functions -----------------------------------------------------------------------


def get_precision(
    precision: str | int,
    device: Any = None,
    *,
    backend: str | None = None,
    target: str = "fabric",
    strategy: str | None = None,
    **options: Any,
) -> Precision:
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
    """
    reg, request = _plan(precision, device, backend, target, strategy)
    if options:
        request = Request(request.precision, request.device, request.backend, request.target, request.strategy, options)
    _, caches = _current()
    policy = _policy(reg, caches)
    if isinstance(policy, Exception):
        raise policy
    availability = _probe(reg, request.precision, request.device, caches)
    if availability.status == "slow":
        warnings.warn(
            f"{request.precision!r} on {request.device} is slow here ({availability.reason});"
            " '32-true' is faster on this device, and get_precision('auto') picks it.",
            PrecisionWarning,
            stacklevel=2,
        )
    obj = policy.create(request)
    _check_created(obj, reg, request)
    obj.mixprec_backend = reg.backend.name
    return obj  # type: ignore[no-any-return]


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
    snap, caches = _current()
    name = _precision(precision, snap)
    dev = _device(device, snap) or _best_device(snap, caches)
    if name == "auto":
        choices = []
        chosen_name: str | None = None
        for candidate_precision in AUTO_ORDER:
            offered = backend is not None and any(
                r.backend.name == backend for r in _candidates(snap, candidate_precision, dev)
            )
            choice = _select(snap, caches, candidate_precision, dev, backend if offered else None)
            status = next(a for r, a in choice.candidates if r is choice.chosen).status if choice.chosen else None
            picked = chosen_name is None and status == "available"
            choices.append((candidate_precision, choice, picked))
            if picked:
                chosen_name = candidate_precision
        candidates = tuple(
            _candidate(r, a, p, dev, picked and r is choice.chosen, _auto_note(choice, r, a, picked))
            for p, choice, picked in choices
            for r, a in choice.candidates
        )
        final = next(((p, c) for p, c, picked in choices if picked), None)
        if final is None:
            return Explanation("'auto'", str(dev), None, None, candidates, "", str(choices[-1][1].error))
        rule = f"auto: the first of {', '.join(AUTO_ORDER)} that is available here (not merely slow)"
        assert final[1].chosen is not None
        return Explanation("'auto'", str(dev), final[0], final[1].chosen.backend.name, candidates, rule)
    choice = _select(snap, caches, name, dev, backend)
    candidates = tuple(
        _candidate(r, a, name, dev, r is choice.chosen, "" if r is choice.chosen else _passed_over(choice, a))
        for r, a in choice.candidates
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


def _passed_over(choice: _Choice, a: Availability) -> str:
    if not a.usable:
        return "cannot run here"
    return "outranked" if choice.chosen is not None else ""


def _auto_note(choice: _Choice, reg: Registered, a: Availability, picked: bool) -> str:
    if picked and reg is choice.chosen:
        return "chosen by auto"
    if reg is choice.chosen and a.status == "slow":
        return "slower than fp32 here: auto passes it over"
    return _passed_over(choice, a)


def available(device: Any = None) -> list[Record]:
    """A record per backend x device type x precision with its status here, and one per failed plugin.

    With ``device``, only backends serving that device are asked, about that device.
    """
    snap, caches = _current()
    dev = _device(device, snap) if device is not None else None
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
