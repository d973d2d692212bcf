"""Device policy for Apple GPUs (MPS): which dtypes the installed torch and macOS support there.

Each precision has version gates, and each gate has its own reason:

- float16 autocast on MPS needs torch 2.5, and "16-mixed" also needs ``torch.amp.GradScaler("mps")``,
  which works from torch 2.8: below that "16-mixed" is unavailable;
- bfloat16 autocast on MPS needs torch 2.6 and macOS 14 (Metal's bfloat type).
- "16-true" runs wherever MPS does; "bf16-true" needs macOS 14 for bfloat16 tensors at all. They
  are offered above the core's priority so that their status on a Mac is this policy's answer.

:func:`decide` is a pure function of a :class:`mixprec.probes.MPSProbe`; it is what the tests exercise
for the Macs and torch versions this machine is not. :func:`probe` is the core's :func:`mixprec.probes.mps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixprec import Availability, Device, Request, probes
from mixprec.probes import MPSProbe, release

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

__all__ = ["MPSProbe", "availability", "create", "decide", "device_count", "probe", "release"]

TORCH_FP16_AUTOCAST = (2, 5)
TORCH_GRAD_SCALER = (2, 8)
TORCH_BF16_AUTOCAST = (2, 6)
MACOS_BF16 = (14, 0)

#: The precisions offered, with the dtype each computes in.
OFFERED = {"bf16-mixed": "bfloat16", "16-mixed": "float16", "bf16-true": "bfloat16", "16-true": "float16"}


def probe() -> MPSProbe:
    """What torch and the platform say about MPS here: the core's :func:`mixprec.probes.mps`."""
    return probes.mps()


def decide(precision: str, device: Device, mps: MPSProbe) -> Availability:
    """The availability of ``precision`` on ``device``, given what ``mps`` found."""
    if precision not in OFFERED:
        return Availability.unavailable(f"mixprec-mps does not offer {precision!r}")
    if mps.macos_version is None:
        return Availability.unavailable("MPS (Apple's Metal GPU API) runs only on macOS; this is not a Mac")
    if not mps.built:
        return Availability.unavailable(
            f"torch {_text(mps.torch_version)} was built without MPS: install the macOS build of torch"
            " (pip install torch, on the Mac)"
        )
    if not mps.available:
        return Availability.unavailable(
            f"torch is built with MPS but finds no usable MPS device on macOS {_text(mps.macos_version)}:"
            " MPS needs macOS 12.3 or newer on Apple silicon or an AMD GPU"
        )
    if device.index not in (None, 0):
        return Availability.unavailable(f"there is one MPS device; {device} does not exist, use 'mps'")
    if precision == "16-mixed":
        return _fp16(mps.torch_version, mps.macos_version)
    if precision == "bf16-mixed":
        return _bf16(mps.torch_version, mps.macos_version)
    if precision == "bf16-true" and mps.macos_version < MACOS_BF16:
        return Availability.unavailable(
            f"bfloat16 tensors on MPS need macOS >= {_text(MACOS_BF16)} (this is macOS {_text(mps.macos_version)}):"
            " upgrade macOS, or use '16-true'"
        )
    return Availability.available(f"{OFFERED[precision]} tensors on MPS")


def _fp16(torch_version: tuple[int, int], macos_version: tuple[int, int]) -> Availability:
    here = f"this is torch {_text(torch_version)}"
    if torch_version < TORCH_FP16_AUTOCAST:
        return Availability.unavailable(
            f"float16 autocast on MPS needs torch >= {_text(TORCH_FP16_AUTOCAST)} ({here}):"
            " upgrade torch, or use '32-true'"
        )
    if torch_version < TORCH_GRAD_SCALER:
        instead = "'bf16-mixed'" if _bf16(torch_version, macos_version).usable else "'32-true'"
        return Availability.unavailable(
            f"'16-mixed' needs a GradScaler, and torch.amp.GradScaler('mps') needs torch >="
            f" {_text(TORCH_GRAD_SCALER)} ({here}): upgrade torch, or use {instead}"
        )
    return Availability.available("float16 autocast and a GradScaler on MPS")


def _bf16(torch_version: tuple[int, int], macos_version: tuple[int, int]) -> Availability:
    if torch_version < TORCH_BF16_AUTOCAST:
        return Availability.unavailable(
            f"bfloat16 autocast on MPS needs torch >= {_text(TORCH_BF16_AUTOCAST)} (this is torch"
            f" {_text(torch_version)}): upgrade torch, or use '32-true'"
        )
    if macos_version < MACOS_BF16:
        instead = "'16-mixed'" if torch_version >= TORCH_GRAD_SCALER else "'32-true'"
        return Availability.unavailable(
            f"bfloat16 on MPS needs macOS >= {_text(MACOS_BF16)} (this is macOS {_text(macos_version)}):"
            f" upgrade macOS, or use {instead}"
        )
    return Availability.available("bfloat16 autocast on MPS")


def _text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe())


def device_count() -> int:
    # MPS exposes a single device.
    return 1 if probe().available else 0


def create(request: Request) -> Precision:
    from mixprec.precision import standard_precision

    # "16-mixed" gets torch.amp.GradScaler("mps"), which availability() has checked torch has.
    return standard_precision(request)
