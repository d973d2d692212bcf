""" "auto": the device that is best here, and the fastest precision that is safe on it.

For the device, "auto" (or None) means the accelerators present before the CPU: of the device types
some backend counts at least one device of, the one whose best backend has the highest priority,
then by name (:func:`best_device`); the CPU where there is none.

For the precision, "auto" selects a backend for each precision of :data:`AUTO_ORDER` in turn and takes the first whose
selected backend reports "available": a precision that is merely emulated ("slow") is never
chosen, because the point of "auto" is speed. Where nothing is available it falls back to
"32-true" if that is usable at all; on a device that is absent nothing is usable, and "auto" is an
error like any other request.

"auto" judges the hardware, never the model (:data:`PER_HARDWARE`, said in every rule). Some
precisions are never chosen, whatever the device (:data:`NEVER_AUTO`): "fp8-mixed" pays only
for large enough matrix multiplications, which depends on the model, not on the device.
"""

from __future__ import annotations

from typing import NamedTuple

from mixprec._backend import ANY_DEVICE, Device
from mixprec._errors import BackendNotFoundError, PrecisionError
from mixprec._policies import Caches, backend_device_count, discovered_device_types
from mixprec._presence import absence
from mixprec._registry import Snapshot
from mixprec._selection import Choice, offers, select, unknown_backend

__all__ = ["AUTO_ORDER", "NEVER_AUTO", "PER_HARDWARE", "Auto", "auto", "best_device"]

#: What "auto" tries, fastest first; the first one that is available (not merely slow) wins.
AUTO_ORDER = ("bf16-mixed", "16-mixed", "32-true")
#: Precisions "auto" never chooses, and why.
NEVER_AUTO = {"fp8-mixed": "whether it pays depends on the model's shapes; try `mixprec bench`"}
_NEVER = "; ".join(f"{precision} is never chosen by auto: {why}" for precision, why in NEVER_AUTO.items())
#: What "auto" judges: said in every rule, because users take it for a judgement of their model.
PER_HARDWARE = (
    "auto is chosen per hardware, not per model: it says what this device computes fast and safely, and"
    " looks at no model; mixprec.tune(model, example), or get_precision('auto', device, model=..., example=...),"
    " measures your model in each precision and picks the fastest safe one"
)


class Auto(NamedTuple):
    """What "auto" did: a choice for each precision of AUTO_ORDER, and the one it took."""

    steps: list[tuple[str, Choice]]
    taken: int | None
    error: PrecisionError | None
    rule: str


def auto(
    snap: Snapshot,
    caches: Caches,
    device: Device,
    backend: str | None,
    target: str = "fabric",
    family: str | None = None,
) -> Auto:
    """Take the first precision of AUTO_ORDER whose selected backend is available, else "32-true" if usable.

    Only backends that build objects for ``target`` and the strategy family ``family`` are candidates (see
    :func:`~mixprec._selection.select`).
    """
    if backend is not None and not any(offers(snap, caches, backend, p, device, target, family) for p in AUTO_ORDER):
        if backend not in snap.backends:
            error: PrecisionError = unknown_backend(snap, backend, "backend=")
        else:
            error = BackendNotFoundError(
                f"Backend {backend!r} offers none of the precisions 'auto' chooses from"
                f" ({', '.join(AUTO_ORDER)}) on {device}: ask it for a precision it offers, or leave backend unset."
            )
        return Auto([], None, error, "")
    # backend= applies to the precisions that backend offers; the others are selected as usual.
    steps = [
        (
            p,
            select(
                snap,
                caches,
                p,
                device,
                backend if backend and offers(snap, caches, backend, p, device, target, family) else None,
                target,
                family,
            ),
        )
        for p in AUTO_ORDER
    ]
    rule = f"auto takes the first of {', '.join(AUTO_ORDER)} whose selected backend is available here, not merely slow"
    taken = next((i for i, (_, choice) in enumerate(steps) if choice.status == "available"), None)
    if taken is None and steps[-1][1].chosen is not None:
        taken = len(steps) - 1
        rule = f"auto falls back to {AUTO_ORDER[-1]!r}: nothing is available here without being slow"
    if taken is None:
        last = steps[-1][1].error
        assert last is not None
        error = type(last)(f"'auto' has no precision to choose on {device} here: {last}")
        return Auto(steps, None, error, f"{rule}; {_NEVER}; {PER_HARDWARE}")
    precision, choice = steps[taken]
    return Auto(steps, taken, None, f"{rule}; for {precision!r}: {choice.rule}; {_NEVER}; {PER_HARDWARE}")


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
