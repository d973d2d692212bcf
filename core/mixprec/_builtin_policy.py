"""Policy of the core's built-in backend: the "true" precisions, on any device."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixprec._backend import Availability, Device, Request

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision


def availability(precision: str, device: Device) -> Availability:
    if precision == "64-true" and device.type == "mps":
        return Availability.unavailable("MPS has no float64; use '32-true'")
    return Availability.available()


def device_count() -> int:
    # The core serves whatever device a backend or the user brings; it finds none itself.
    return 0


def create(request: Request) -> Precision:
    from mixprec.precision import true_precision

    return true_precision(request)
