"""Asking backends: their policy modules, imported at first use, and what they answer, checked and cached.

A policy is third-party code. Each answer is checked where it is read (an ``Availability`` with
a status a policy may give and a ``str`` reason; a device count that is a non-negative ``int``),
and a policy that cannot be imported, lacks a function, raises or answers wrongly makes its
backend "failed": skipped like an unavailable one, warned about once, an error under
``MIXPREC_STRICT``.

Everything learnt is kept in the :class:`~mixprec._caches.Caches` that the registry's current
snapshot owns, so a warm call asks nothing twice; registering or unregistering a plugin publishes
a new snapshot, and with it empty caches.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from mixprec._backend import ANY_DEVICE, Availability, Device
from mixprec._caches import Caches
from mixprec._errors import PluginError, PrecisionWarning, shown
from mixprec._import_lock import IMPORT_LOCK, import_module
from mixprec._registry import Registered, Snapshot, registry

__all__ = [
    "Caches",
    "ask",
    "backend_device_count",
    "current",
    "discovered_device_types",
    "policy",
    "policy_failed",
    "serves",
]

_POLICY_STATUSES = ("available", "slow", "unavailable")
_POLICY_FUNCTIONS = ("availability", "create", "device_count")


def current() -> tuple[Snapshot, Caches]:
    """The registry's snapshot and the caches it owns (new, empty ones after a registration)."""
    snap = registry.snapshot()
    return snap, snap.caches


def policy_failed(reg: Registered, caches: Caches, problem: str) -> Availability:
    """Report a backend whose policy failed: an error under MIXPREC_STRICT, else a warning once."""
    message = f"backend {reg.backend.name!r} of {reg.plugin} failed: {problem}"
    if caches.strict:
        raise PluginError(f"MIXPREC_STRICT is set and the {message}")
    if reg.backend.name not in caches.reported:
        caches.reported.add(reg.backend.name)
        warnings.warn(f"The {message}; it is skipped.", PrecisionWarning, stacklevel=2)
    return Availability("failed", problem)


def policy(reg: Registered, caches: Caches) -> ModuleType | PluginError:
    """The backend's policy module, imported at first use, or the error that it cannot be used."""
    name = reg.backend.name
    found = caches.policies.get(name)
    if found is None:
        module_name = reg.backend.policy
        try:
            module = import_module(module_name)
        except Exception as exc:
            problem = f"its policy module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        else:
            missing = [f for f in _POLICY_FUNCTIONS if not callable(getattr(module, f, None))]
            problem = f"its policy module {module_name!r} lacks {', '.join(missing)}" if missing else ""
        if problem:
            policy_failed(reg, caches, problem)
            found = PluginError(f"Backend {name!r} ({reg.plugin}) cannot be used: {problem}.")
        else:
            found = module
        caches.policies[name] = found
    return found


def ask(module: ModuleType, precision: str, device: Device) -> Availability | str:
    """The policy's answer for ``precision`` on ``device`` as a clean Availability, or what is wrong with it."""
    try:
        with IMPORT_LOCK:  # a policy may import lazily: see mixprec._import_lock
            answer = module.availability(precision, device)
    except Exception as exc:
        return f"availability() raised {type(exc).__name__}: {exc}"
    if not isinstance(answer, Availability):
        return f"availability() returned {shown(answer)}, not a mixprec.Availability"
    # Availability checks itself on construction, but a subclass or object.__setattr__ can get around that.
    status: Any = answer.status
    reason: Any = answer.reason
    if type(status) is not str or status not in _POLICY_STATUSES:
        return (
            f"availability() returned the status {shown(status)}; a policy answers one of {', '.join(_POLICY_STATUSES)}"
        )
    if not isinstance(reason, str):
        return f"availability() returned a reason of type {type(reason).__name__}, not a str"
    return Availability(status, str.__str__(reason))  # type: ignore[arg-type]


def backend_device_count(reg: Registered, caches: Caches) -> int | str:
    """How many devices of its type the backend's policy counts, or what is wrong with it (cached)."""
    found = caches.counts.get(reg.backend.name)
    if found is None:
        module = policy(reg, caches)
        found = str(module) if isinstance(module, PluginError) else _count(reg, module, caches)
        caches.counts[reg.backend.name] = found
    return found


def _count(reg: Registered, module: ModuleType, caches: Caches) -> int | str:
    try:
        with IMPORT_LOCK:
            count = module.device_count()
    except Exception as exc:
        problem = f"device_count() raised {type(exc).__name__}: {exc}"
    else:
        if not isinstance(count, bool) and isinstance(count, int) and count >= 0:
            return int.__int__(count)
        problem = f"device_count() returned {shown(count)}, not a non-negative int"
    return policy_failed(reg, caches, problem).reason


def discovered_device_types(reg: Registered, caches: Caches) -> tuple[str, ...] | None:
    """The device types a backend for every device type serves here, found at run time (cached).

    A policy of such a backend may define ``device_types()``: the device types it serves here, found
    without starting any device runtime (mixprec-accelerator's accelerators). The backend is then a
    candidate for those device types only, and they take part in choosing the best device and in
    ``available()``. None where the policy has no ``device_types()`` (it serves every device type
    alike, as the core's "true" precisions do); () where it found none or failed (reported like any
    failing policy).
    """
    name = reg.backend.name
    if name in caches.discovered:
        return caches.discovered[name]
    found: tuple[str, ...] | None = None
    module = policy(reg, caches)
    listed = None if isinstance(module, PluginError) else getattr(module, "device_types", None)
    if callable(listed):
        found = ()
        try:
            types = listed()
        except Exception as exc:
            policy_failed(reg, caches, f"device_types() raised {type(exc).__name__}: {exc}")
        else:
            if isinstance(types, (tuple, list)) and all(isinstance(t, str) for t in types):
                found = tuple(dict.fromkeys(str.__str__(t) for t in types))
            else:
                policy_failed(reg, caches, f"device_types() returned {shown(types)}, not a tuple of str")
    caches.discovered[name] = found
    return found


def serves(reg: Registered, device_type: str, caches: Caches) -> bool:
    """Whether backend ``reg`` serves ``device_type`` here: its own type, or one its policy discovered."""
    if reg.backend.device_type != ANY_DEVICE:
        return reg.backend.device_type == device_type
    found = discovered_device_types(reg, caches)
    return found is None or device_type in found
