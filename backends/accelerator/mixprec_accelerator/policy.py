"""Device policy for any torch accelerator: what torch and the device's own module say it can do.

mixprec-accelerator serves a device type when torch reaches it through ``torch.accelerator``
(Intel GPUs as ``xpu``, and any device whose runtime registered itself) or through a device module
registered under the type (``torch._register_device_module``: Ascend's ``npu``, Gaudi's ``hpu``,
out-of-tree devices under their PrivateUse1 name). "cpu", "cuda" and "mps" have backends of their
own that know the hardware, and "meta" has no data; it serves none of them.

For a device type it serves, its answer rests on what can be read without starting the device:

- the dtypes torch's autocast takes there: the device module's ``get_amp_supported_dtype()`` where
  it has one (torch requires it of PrivateUse1 devices), else torch's own list for in-tree types
  (bfloat16 and float16). A dtype not listed is "unavailable", saying which are;
- whether torch has autocast for the type at all (``torch.amp.is_autocast_available``);
- for "16-mixed", whether the GradScaler's two kernels (``aten::_amp_foreach_non_finite_check_and_unscale_``
  and ``aten::_amp_update_scale_``) are registered for the device's dispatch key: a look-up in
  torch's dispatcher, which runs nothing on the device.

Whether the device computes a listed dtype natively cannot be known from these, so a usable
precision is "available, native speed unknown: run mixprec bench". It is "available" rather than
"slow" on purpose: an accelerator's autocast list is its vendor's statement of what the hardware is
for, and "slow" would make "auto" pass over every such device's half precision. A vendor's own
backend, which knows its hardware, outranks this one.

:func:`decide` is a pure function of an :class:`AcceleratorProbe`; it is what the tests exercise for
devices this machine does not have. :func:`probe` asks torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixprec import Availability, Device, Request

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

__all__ = [
    "OFFERED",
    "OWN_BACKENDS",
    "SCALER_KERNELS",
    "AcceleratorProbe",
    "availability",
    "create",
    "decide",
    "device_count",
    "device_types",
    "probe",
]

#: The precisions offered, with the dtype each computes in.
OFFERED = {"bf16-mixed": "bfloat16", "16-mixed": "float16", "bf16-true": "bfloat16", "16-true": "float16"}
#: Device types served by a backend of their own, which this one leaves alone, with that backend.
OWN_BACKENDS = {"cpu": "mixprec-cpu", "cuda": "mixprec-cuda", "mps": "mixprec-mps"}
#: The kernels ``torch.amp.GradScaler`` runs on the device, which "16-mixed" needs.
SCALER_KERNELS = ("aten::_amp_foreach_non_finite_check_and_unscale_", "aten::_amp_update_scale_")
#: The dtypes torch's autocast takes on an in-tree device type whose module does not list its own.
_TORCH_AUTOCAST_DTYPES = ("bfloat16", "float16")
_NOT_SERVED = frozenset({*OWN_BACKENDS, "meta"})
SPEED_UNKNOWN = "native speed unknown: run mixprec bench"


@dataclass(frozen=True)
class AcceleratorProbe:
    """What torch says of one device type, read without starting its runtime."""

    device_type: str
    #: Whether torch reaches the type: through torch.accelerator or a registered device module.
    reached: bool
    #: Whether torch has autocast for the type.
    autocast: bool
    #: The dtypes autocast takes there, as names ("bfloat16"), and who says so.
    dtypes: tuple[str, ...]
    dtypes_from: str
    #: The device's dispatch key (e.g. "XPU", "PrivateUse1"); "" where torch knows none.
    dispatch_key: str
    #: The GradScaler kernels not registered for that dispatch key.
    missing_kernels: tuple[str, ...]


def device_types() -> tuple[str, ...]:
    """The device types this backend serves here, found at run time without starting any device runtime.

    torch.accelerator's type (a compile-time fact of torch's build, or the registered PrivateUse1
    device) and the PrivateUse1 name, if renamed, less the types with backends of their own.
    """
    import torch

    found: list[str] = []
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        # Documented not to poison fork: it reads what torch was built with and what registered itself.
        current = accelerator.current_accelerator()
        if current is not None:
            found.append(current.type)
    private = torch._C._get_privateuse1_backend_name()
    if private != "privateuseone":
        found.append(private)
    return tuple(dict.fromkeys(t for t in found if t not in _NOT_SERVED))


def _device_module(device_type: str) -> Any:
    import torch

    module = getattr(torch, device_type, None)
    return module if callable(getattr(module, "device_count", None)) else None


def _dtype_names(dtypes: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(d).removeprefix("torch.") for d in dtypes)


def probe(device_type: str) -> AcceleratorProbe:
    """Ask torch about ``device_type``: dispatcher and registry look-ups only, nothing that runs on the device."""
    import torch

    module = _device_module(device_type)
    reached = device_type in device_types() or module is not None
    listed = getattr(module, "get_amp_supported_dtype", None)
    if callable(listed):
        dtypes = _dtype_names(listed())
        dtypes_from = f"torch.{device_type}.get_amp_supported_dtype()"
    else:
        dtypes = _TORCH_AUTOCAST_DTYPES
        dtypes_from = f"torch's autocast for {device_type!r}"
    try:
        key = torch._C._dispatch_key_for_device(device_type)
    except RuntimeError:
        key = ""
    missing = tuple(
        kernel
        for kernel in SCALER_KERNELS
        if not key or not torch._C._dispatch_has_kernel_for_dispatch_key(kernel, key)
    )
    autocast = bool(torch.amp.is_autocast_available(device_type)) if reached else False
    return AcceleratorProbe(device_type, reached, autocast, dtypes, dtypes_from, key, missing)


def decide(precision: str, device: Device, found: AcceleratorProbe) -> Availability:
    """The availability of ``precision`` on ``device``, given what ``found`` says of its type."""
    dtype = OFFERED.get(precision)
    if dtype is None:
        return Availability.unavailable(f"mixprec-accelerator does not offer {precision!r}")
    if device.type in OWN_BACKENDS:
        return Availability.unavailable(
            f"mixprec-accelerator leaves {device.type!r} to {OWN_BACKENDS[device.type]}, which knows that"
            f" hardware: pip install {OWN_BACKENDS[device.type]}"
        )
    if device.type == "meta" or not found.reached:
        return Availability.unavailable(
            f"torch reaches no {device.type!r} device here: neither torch.accelerator nor a device module"
            f" torch.{device.type} (install the vendor's torch extension, e.g. intel-extension-for-pytorch,"
            " torch_npu or habana-torch-plugin, or a torch built for the device)"
        )
    mixed = precision.endswith("-mixed")
    if mixed and not found.autocast:
        return Availability.unavailable(f"torch has no autocast for {device.type!r}: use '32-true'")
    if dtype not in found.dtypes:
        listed = ", ".join(found.dtypes) or "nothing"
        kind = precision.rsplit("-", 1)[1]
        other = next((p for p, d in OFFERED.items() if d in found.dtypes and p.endswith(f"-{kind}")), "32-true")
        return Availability.unavailable(
            f"{dtype} is not among the dtypes {found.dtypes_from} lists ({listed}): use {other!r}"
        )
    if precision == "16-mixed" and found.missing_kernels:
        instead = "'bf16-mixed'" if "bfloat16" in found.dtypes else "'32-true'"
        where = f"dispatch key {found.dispatch_key}" if found.dispatch_key else f"device type {device.type!r}"
        return Availability.unavailable(
            f"'16-mixed' needs a GradScaler, and {', '.join(found.missing_kernels)} has no kernel for {where}:"
            f" use {instead}"
        )
    what = f"{dtype} autocast" if mixed else f"{dtype} tensors"
    scaler = " and a GradScaler" if precision == "16-mixed" else ""
    return Availability.available(f"{what}{scaler} on {device.type}, as {found.dtypes_from} lists; {SPEED_UNKNOWN}")


def availability(precision: str, device: Device) -> Availability:
    if device.type in OWN_BACKENDS or device.type == "meta":
        # The device type alone settles it; say what this backend does serve here.
        answer = decide(precision, device, AcceleratorProbe(device.type, False, False, (), "", "", ()))
        found = device_types()
        serves = f"it serves {', '.join(found)} here" if found else "torch reaches no other accelerator here"
        return Availability(answer.status, f"{answer.reason}; {serves}")
    return decide(precision, device, probe(device.type))


def device_count() -> int:
    # A backend for every device type is never asked to count: the resolver counts through the
    # device type's own backends, or torch.<type>.device_count() (see mixprec._presence).
    return 0


def create(request: Request) -> Precision:
    from mixprec.precision import standard_precision

    # "16-mixed" gets torch.amp.GradScaler(request.device.type), whose kernels availability() found.
    return standard_precision(request)
