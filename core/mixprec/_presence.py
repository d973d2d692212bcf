"""Is the device there? The resolver checks it before it trusts a policy's "available" or "slow".

A policy says whether a precision can run on a device; whether that device exists in this
process is checked apart from it, for every backend alike, so that nothing is ever served for a
device that is not there (torch built without it, no such device, an index out of range). The
devices of a type are counted by whoever knows them:

- for a backend of that device type, its policy's ``device_count()``;
- for a backend of every device type (the core's "true" precisions), the backends installed for
  that device type: the largest count any of them reports. A backend is written to count its
  devices without starting them (mixprec-cuda reads NVML), and the core's precisions are thereby
  honest on a third-party device type too. Where no backend for the type is installed (or none
  can count), torch's device module for the type counts: ``torch.<type>.device_count()``
  (``torch.cpu`` counts one CPU; ``torch.cuda`` counts through NVML and initialises no CUDA
  context, though where NVML cannot be loaded it asks the CUDA driver, which is why the type's
  backend is asked first). Where nobody can count, the device is absent.

No device of the type makes a usable answer "unavailable: no <type> device here ..."; an index
at or past the count makes it "unavailable: <type>:<i> does not exist ...". A policy's own
"unavailable" or "failed" is kept as it is: it usually says more. Counts are cached per registry
generation like every other answer, so a warm call pays nothing for the check.
"""

from __future__ import annotations

from mixprec._backend import ANY_DEVICE, Availability, Device
from mixprec._errors import PluginError, shown
from mixprec._policies import Caches, ask, backend_device_count, discovered_device_types, policy, policy_failed
from mixprec._registry import Registered, Snapshot

__all__ = ["absence", "best_device", "probe", "torch_device_count"]


def torch_device_count(device_type: str) -> int | str:
    """How many ``device_type`` devices torch counts here, or why it cannot count them.

    Only ``torch.<type>.device_count()`` is called, which initialises no device runtime.
    """
    import torch

    count = getattr(getattr(torch, device_type, None), "device_count", None)
    if not callable(count):
        return f"torch {torch.__version__} has no device module torch.{device_type} that counts {device_type} devices"
    try:
        found = count()
    except Exception as exc:
        return f"torch.{device_type}.device_count() raised {type(exc).__name__}: {exc}"
    if isinstance(found, bool) or not isinstance(found, int) or found < 0:
        return f"torch.{device_type}.device_count() returned {shown(found)}, not a device count"
    return int.__int__(found)


def _torch_count(device_type: str, caches: Caches) -> int | str:
    found = caches.torch.get(device_type)
    if found is None:
        found = caches.torch[device_type] = torch_device_count(device_type)
    return found


def _missing(device: Device, count: int, counted_by: str, build: str = "") -> Availability | None:
    """Unavailable when ``device`` is not among ``count`` devices of its type; None when it is."""
    if count == 0:
        return Availability("unavailable", f"no {device.type} device here: {counted_by} is 0{build}")
    if device.index is not None and device.index >= count:
        valid = f"{device.type}:0" if count == 1 else f"{device.type}:0 to {device.type}:{count - 1}"
        return Availability("unavailable", f"{device} does not exist: {counted_by} is {count} ({valid})")
    return None


def absence(reg: Registered, device: Device, snap: Snapshot, caches: Caches) -> Availability | None:
    """Why ``device`` is absent for backend ``reg``: "unavailable", or "failed" if its count fails; None if present."""
    if reg.backend.device_type != ANY_DEVICE:
        count = backend_device_count(reg, caches)
        if isinstance(count, str):
            return Availability("failed", count)
        return _missing(device, count, f"device_count() of backend {reg.backend.name!r}")
    counted = [
        (count, r.backend.name)
        for r in snap.for_device_type(device.type)
        if r.backend.device_type == device.type and isinstance(count := backend_device_count(r, caches), int)
    ]
    if counted:
        count, name = min(counted, key=lambda found: (-found[0], found[1]))
        return _missing(device, count, f"device_count() of backend {name!r}")
    by_torch = _torch_count(device.type, caches)
    if isinstance(by_torch, int):
        import torch

        return _missing(device, by_torch, f"torch.{device.type}.device_count()", f" (torch {torch.__version__})")
    return Availability(
        "unavailable", f"{by_torch}, and no installed backend for device type {device.type!r} counts them"
    )


def probe(reg: Registered, precision: str, device: Device, snap: Snapshot, caches: Caches) -> Availability:
    """The status of ``precision`` on ``device`` from backend ``reg``: its policy's answer, if the device is there."""
    key = (reg.backend.name, precision, device)
    found = caches.probes.get(key)
    if found is None:
        module = policy(reg, caches)
        if isinstance(module, PluginError):
            found = Availability("failed", str(module))
        else:
            answer = ask(module, precision, device)
            if isinstance(answer, str):
                found = policy_failed(reg, caches, answer)
            elif answer.usable:
                found = absence(reg, device, snap, caches) or answer
            else:
                found = answer
        caches.probes[key] = found
    return found


def best_device(snap: Snapshot, caches: Caches) -> Device:
    """The device "auto" means: accelerators present before the CPU, by their best backend's priority, then name.

    A backend for every device type takes part with the device types its policy discovered here
    (``device_types()``), each counted as the resolver counts such a device.
    """
    if caches.best_device is None:
        best: dict[str, int] = {}
        for reg in snap.backends.values():
            kind = reg.backend.device_type
            if kind == ANY_DEVICE:
                kinds = discovered_device_types(reg, caches) or ()
                present = [t for t in kinds if not absence(reg, Device(t), snap, caches)]
            else:
                count = backend_device_count(reg, caches)
                present = [kind] if isinstance(count, int) and count > 0 else []
            for served in present:
                if served != "cpu":
                    best[served] = max(best.get(served, reg.backend.priority), reg.backend.priority)
        ranked = sorted(best, key=lambda kind: (-best[kind], kind))
        caches.best_device = Device(ranked[0] if ranked else "cpu")
    return caches.best_device
