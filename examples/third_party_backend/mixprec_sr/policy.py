"""Device policy of mixprec-sr: whether this CPU computes bfloat16 natively, and building the object.

:func:`decide` is a pure function of the probe's answer, so tests can ask it about CPUs this
machine is not; :func:`probe` asks torch once per process.

mixprec imports this module to answer ``mixprec list``, which must not import lightning: so the
module imports only ``mixprec`` and ``mixprec.precision`` (neither imports lightning), and the
precision class, which is a Lightning class, only inside :func:`create`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from mixprec import Availability, Device, OptionError, PrecisionError, Request
from mixprec.precision import strategy_family

if TYPE_CHECKING:
    from mixprec_sr.precision import StochasticRoundingPrecision

__all__ = ["availability", "create", "decide", "device_count", "probe"]


@functools.cache
def probe() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX), as torch reports it."""
    import torch.cpu

    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(check()) for check in checks if callable(check))


def decide(device: Device, native_bf16: bool) -> Availability:
    if device.index not in (None, 0):
        return Availability.unavailable(f"there is one CPU device; {device} does not exist, use 'cpu'")
    if not native_bf16:
        return Availability.slow(
            "the CPU has neither AVX512-BF16 nor AMX, so bfloat16 is emulated and slower than fp32"
        )
    return Availability.available("the CPU computes bfloat16 natively; weight updates are rounded stochastically")


def availability(precision: str, device: Device) -> Availability:
    return decide(device, probe())


def device_count() -> int:
    return 1


def create(request: Request) -> StochasticRoundingPrecision:
    unknown = sorted(set(request.options) - {"seed"})
    if unknown:
        raise OptionError(
            f"Unknown option(s) {unknown} for {request.precision!r} from backend 'sr': it takes only 'seed'."
        )
    seed = request.options.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise OptionError(f"seed={seed!r}: the seed of the rounding noise must be an int.")
    if strategy_family(request) is not None:
        raise PrecisionError(
            f"mixprec-sr builds no precision for strategy {request.strategy!r}: leave strategy unset, or pass"
            " backend='core' for the core's plain 'bf16-true'."
        )
    from mixprec_sr.precision import StochasticRoundingPrecision

    return StochasticRoundingPrecision(seed)
