"""Device policy for CPUs: which low-precision dtypes this CPU computes natively.

A CPU without native bf16 (AVX512-BF16 or AMX) emulates it, and mixed precision then runs several
times slower than fp32: such a precision is reported "slow", so "auto" passes it over. fp16 is
native only with AMX-FP16. :func:`decide` is a pure function of a :class:`CPUFeatures` probe; it
is what the tests exercise for CPUs this machine is not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mixprec import Availability, Device, Request

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

__all__ = ["CPUFeatures", "availability", "create", "decide", "device_count", "probe"]


@dataclass(frozen=True)
class CPUFeatures:
    """What the CPU computes natively, as torch reports it."""

    avx512_bf16: bool
    amx_tile: bool
    amx_fp16: bool

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx_tile

    @property
    def native_fp16(self) -> bool:
        return self.amx_fp16


@functools.cache
def probe() -> CPUFeatures:
    import torch.cpu

    def flag(name: str) -> bool:
        check = getattr(torch.cpu, name, None)
        return bool(check()) if callable(check) else False

    return CPUFeatures(
        avx512_bf16=flag("_is_avx512_bf16_supported"),
        amx_tile=flag("_is_amx_tile_supported"),
        amx_fp16=flag("_is_amx_fp16_supported"),
    )


def decide(precision: str, device: Device, features: CPUFeatures) -> Availability:
    if device.index not in (None, 0):
        return Availability.unavailable(f"there is one CPU device; {device} does not exist, use 'cpu'")
    if precision == "bf16-mixed":
        if features.native_bf16:
            return Availability.available("the CPU computes bfloat16 natively (AVX512-BF16 or AMX)")
        return Availability.slow(
            "the CPU has neither AVX512-BF16 nor AMX, so bfloat16 is emulated and slower than fp32"
        )
    if precision == "16-mixed":
        if features.native_fp16:
            return Availability.available("the CPU computes float16 natively (AMX-FP16)")
        return Availability.slow("the CPU has no AMX-FP16, so float16 is emulated and far slower than fp32")
    return Availability.unavailable(f"mixprec-cpu does not offer {precision!r}")


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe())


def device_count() -> int:
    return 1


def create(request: Request) -> Precision:
    from mixprec.precision import mixed_precision

    # fp16 needs loss scaling on every device; Lightning's connector turns CPU fp16 into bf16, we do not.
    return mixed_precision(request, scaler=request.precision == "16-mixed")
