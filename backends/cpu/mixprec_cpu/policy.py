"""Device policy for CPUs: which low-precision dtypes this CPU computes natively.

A CPU without native bfloat16 (AVX512-BF16, or AMX, whose tiles compute bfloat16) emulates it, and
mixed precision then runs several times slower than fp32 (measured on an AVX2-only CPU: 4-25x).
Such a precision is reported "slow": it works, ``get_precision`` warns, and "auto" passes it over.
The same holds for float16, native only with AVX512-FP16 or AMX-FP16, and for the "true" half
precisions, which compute in the same dtypes: mixprec-cpu offers "bf16-true" and "16-true" too, above
the core's priority, so that their status on a CPU says whether the CPU computes them. The mixed ones run through
``torch.autocast("cpu")``; "16-mixed" also gets ``torch.amp.GradScaler("cpu")``, which torch supports
(Lightning's connector turns CPU "16-mixed" into bf16; mixprec does not).

Only x86 features are recognised: on other CPUs both dtypes are reported "slow", the safe answer.

:func:`decide` is a pure function of a :class:`mixprec.probes.CPUFeatures`; it is what the tests
exercise for CPUs this machine is not. :func:`probe` is the core's :func:`mixprec.probes.cpu`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixprec import Availability, Device, Request, probes
from mixprec.probes import CPUFeatures

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

__all__ = ["DTYPES", "CPUFeatures", "availability", "create", "decide", "device_count", "probe"]


def probe() -> CPUFeatures:
    """This CPU's features: :func:`mixprec.probes.cpu`, read once per process."""
    return probes.cpu()


#: The low dtype each offered precision computes in: "bfloat16" or "float16".
DTYPES = {"bf16-mixed": "bfloat16", "bf16-true": "bfloat16", "16-mixed": "float16", "16-true": "float16"}


def decide(precision: str, device: Device, features: CPUFeatures) -> Availability:
    """The availability of ``precision`` on ``device``, given the CPU's ``features``."""
    dtype = DTYPES.get(precision)
    if dtype is None:
        return Availability.unavailable(f"mixprec-cpu does not offer {precision!r}")
    if device.index not in (None, 0):
        return Availability.unavailable(f"there is one CPU device; {device} does not exist, use 'cpu'")
    if dtype == "bfloat16":
        if features.native_bf16:
            return Availability.available(f"the CPU computes bfloat16 natively ({', '.join(features.native_bf16)})")
        return Availability.slow(
            "the CPU has neither AVX512-BF16 nor AMX, so bfloat16 is emulated and slower than fp32; use '32-true'"
        )
    if features.native_fp16:
        return Availability.available(f"the CPU computes float16 natively ({', '.join(features.native_fp16)})")
    kind = precision.rsplit("-", 1)[1]
    instead = f"'bf16-{kind}'" if features.native_bf16 else "'32-true'"
    return Availability.slow(
        f"the CPU has neither AVX512-FP16 nor AMX-FP16, so float16 is emulated and far slower than fp32; use {instead}"
    )


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe())


def device_count() -> int:
    return 1


def create(request: Request) -> Precision:
    from mixprec.precision import standard_precision

    # "16-mixed" is float16 with a CPU GradScaler, as its contract says: Lightning's connector turns
    # CPU fp16 into bf16, mixprec does not.
    return standard_precision(request)
