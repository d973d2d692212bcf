"""A vendor's own backend for the fake device: it knows its hardware, so it outranks mixprec-accelerator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixprec import Availability, Backend, Device, Request, hookimpl

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision


class VendorPlugin:
    """The plugin registering the backend "fakevendor" for device type "fakedev"."""

    @hookimpl
    def mixprec_backends(self) -> list[Backend]:
        return [
            Backend(
                name="fakevendor",
                device_type="fakedev",
                precisions=("bf16-mixed",),
                policy="tests.accelerator.vendor_policy",
                description="the fake device's vendor backend",
            )
        ]


def availability(precision: str, device: Device) -> Availability:
    return Availability.available("the vendor knows fakedev computes bfloat16 natively")


def device_count() -> int:
    return 2


def create(request: Request) -> Precision:
    from mixprec.precision import standard_precision

    return standard_precision(request)
