"""Policy of the core's built-in backend: the "true" precisions, on any device that is present.

Whether the device is there is the resolver's check (:mod:`mixprec._presence`), made before this
policy's answer counts; the policy only says what the device type cannot do.
"""

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
    # The core brings no device of its own. The resolver never asks a backend for every device type
    # to count: it counts such a device through torch's device module (see mixprec._presence).
    return 0


def create(request: Request) -> Precision:
    from mixprec.precision import true_precision

    return true_precision(request)
