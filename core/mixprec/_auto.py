""" "auto": the fastest precision that is safe on the device.

"auto" selects a backend for each precision of :data:`AUTO_ORDER` in turn and takes the first whose
selected backend reports "available": a precision that is merely emulated ("slow") is never
chosen, because the point of "auto" is speed. Where nothing is available it falls back to
"32-true" if that is usable at all; on a device that is absent nothing is usable, and "auto" is an
error like any other request.

Some precisions are never chosen, whatever the device (:data:`NEVER_AUTO`): "fp8-mixed" pays only
for large enough matrix multiplications, which depends on the model, not on the device.
"""

from __future__ import annotations

from typing import NamedTuple

from mixprec._backend import Device
from mixprec._errors import BackendNotFoundError, PrecisionError
from mixprec._policies import Caches
from mixprec._registry import Snapshot
from mixprec._selection import Choice, offers, select, unknown_backend

__all__ = ["AUTO_ORDER", "NEVER_AUTO", "Auto", "auto"]

#: What "auto" tries, fastest first; the first one that is available (not merely slow) wins.
AUTO_ORDER = ("bf16-mixed", "16-mixed", "32-true")
#: Precisions "auto" never chooses, and why.
NEVER_AUTO = {"fp8-mixed": "whether it pays depends on the model's shapes; try `mixprec bench`"}
_NEVER = "; ".join(f"{precision} is never chosen by auto: {why}" for precision, why in NEVER_AUTO.items())


class Auto(NamedTuple):
    """What "auto" did: a choice for each precision of AUTO_ORDER, and the one it took."""

    steps: list[tuple[str, Choice]]
    taken: int | None
    error: PrecisionError | None
    rule: str


def auto(snap: Snapshot, caches: Caches, device: Device, backend: str | None, target: str = "fabric") -> Auto:
    """Take the first precision of AUTO_ORDER whose selected backend is available, else "32-true" if usable.

    Only backends that build objects for ``target`` are candidates (see :func:`~mixprec._selection.select`).
    """
    if backend is not None and not any(offers(snap, backend, p, device, target) for p in AUTO_ORDER):
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
                backend if backend and offers(snap, backend, p, device, target) else None,
                target,
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
        return Auto(steps, None, error, f"{rule}; {_NEVER}")
    precision, choice = steps[taken]
    return Auto(steps, taken, None, f"{rule}; for {precision!r}: {choice.rule}; {_NEVER}")
