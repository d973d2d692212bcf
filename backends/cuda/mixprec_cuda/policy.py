"""Device policy for CUDA GPUs: what each GPU computes natively, asked per device index.

- "bf16-mixed" only where the GPU computes bfloat16 natively: compute capability 8.0 (Ampere) or
  newer, the rule of ``torch.cuda.is_bf16_supported(including_emulation=False)``, applied to the
  requested device rather than the current one. Older GPUs emulate bfloat16 and are refused, with
  the precision to use instead.
- "16-mixed" with ``torch.amp.GradScaler("cuda")`` everywhere; below compute capability 7.0 the GPU
  has no tensor cores, so it is reported "slow" and "auto" answers "32-true" there.
- "bf16-true" and "16-true" by the same rules for their dtype, above the core's priority, so that
  their status on a GPU says whether it computes the dtype (the core's fallback cannot know).

ROCm builds of torch also use the device type "cuda"; torch treats every ROCm GPU as computing
bfloat16 natively, and so does this policy.

:func:`decide` is a pure function of a :class:`CUDAProbe`; it is what the tests exercise for GPUs
this machine does not have. :func:`probe` asks torch once per process. Reading a GPU's properties
initialises CUDA in this process, as any CUDA work does; it happens at the first question about a
CUDA device, never when the plugin is loaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mixprec import Availability, Device, Request

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

__all__ = ["GPU", "CUDAProbe", "availability", "create", "decide", "device_count", "probe"]

#: Compute capability from which a GPU computes bfloat16 natively (Ampere).
NATIVE_BF16 = (8, 0)
#: Compute capability from which a GPU has tensor cores for float16 (Volta).
TENSOR_CORES = (7, 0)
#: The precisions offered, with the dtype each computes in and whether it is "mixed" or "true".
OFFERED = {
    "bf16-mixed": ("bfloat16", "mixed"),
    "16-mixed": ("float16", "mixed"),
    "bf16-true": ("bfloat16", "true"),
    "16-true": ("float16", "true"),
}


@dataclass(frozen=True)
class GPU:
    """One GPU as torch reports it."""

    name: str
    #: "sm_80" on CUDA, the gfx architecture on ROCm.
    arch: str
    capability: tuple[int, int]


@dataclass(frozen=True)
class CUDAProbe:
    """What torch knows about CUDA in this process."""

    torch_version: str
    #: ``torch.version.cuda``: None when torch was built without CUDA.
    cuda_version: str | None
    #: ``torch.version.hip``: set on ROCm builds, where ``cuda_version`` is None.
    hip_version: str | None = None
    devices: tuple[GPU, ...] = ()
    current_device: int = 0
    #: Why reading the GPUs failed (a driver error), if it did.
    error: str | None = None

    @property
    def runtime(self) -> str | None:
        """The GPU runtime torch was built with, e.g. "CUDA 12.4"; None when it was built with neither."""
        if self.cuda_version is not None:
            return f"CUDA {self.cuda_version}"
        if self.hip_version is not None:
            return f"ROCm {self.hip_version}"
        return None


@functools.cache
def probe() -> CUDAProbe:
    import torch

    found = CUDAProbe(torch.__version__, torch.version.cuda, torch.version.hip)
    count = torch.cuda.device_count()
    if found.runtime is None or count == 0:
        return found
    rocm = found.hip_version is not None
    try:
        devices = tuple(_gpu(index, rocm=rocm) for index in range(count))
        return replace(found, devices=devices, current_device=torch.cuda.current_device())
    except RuntimeError as exc:
        # A driver that is too old, or GPUs that are busy or lost, fail here rather than at device_count().
        return replace(found, error=str(exc))


def _gpu(index: int, *, rocm: bool) -> GPU:
    import torch

    props = torch.cuda.get_device_properties(index)
    arch = props.gcnArchName.split(":")[0] if rocm else f"sm_{props.major}{props.minor}"
    return GPU(props.name, arch, (props.major, props.minor))


def decide(precision: str, device: Device, cuda: CUDAProbe) -> Availability:
    """The availability of ``precision`` on ``device``, given what ``cuda`` found."""
    if precision not in OFFERED:
        return Availability.unavailable(f"mixprec-cuda does not offer {precision!r}")
    if cuda.runtime is None:
        return Availability.unavailable(
            f"torch {cuda.torch_version} was built without CUDA: install a CUDA build of torch"
            " (https://pytorch.org/get-started/locally/)"
        )
    if cuda.error is not None:
        return Availability.unavailable(f"CUDA failed to initialise: {cuda.error}")
    count = len(cuda.devices)
    if count == 0:
        rocm = cuda.hip_version is not None
        tool, variable = ("rocm-smi", "HIP_VISIBLE_DEVICES") if rocm else ("nvidia-smi", "CUDA_VISIBLE_DEVICES")
        return Availability.unavailable(
            f"torch {cuda.torch_version} (built with {cuda.runtime}) sees no CUDA device: check that the GPU"
            f" driver works ({tool}) and that {variable} does not hide every GPU"
        )
    index = cuda.current_device if device.index is None else device.index
    if index >= count:
        valid = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        plural = "device" if count == 1 else "devices"
        return Availability.unavailable(f"{device} does not exist: {count} CUDA {plural} ({valid})")
    gpu = cuda.devices[index]
    dtype, kind = OFFERED[precision]
    if dtype == "bfloat16":
        return _bf16(index, gpu, kind, rocm=cuda.hip_version is not None)
    return _fp16(index, gpu, kind)


def _bf16(index: int, gpu: GPU, kind: str, *, rocm: bool) -> Availability:
    if rocm or gpu.capability >= NATIVE_BF16:
        return Availability.available(f"CUDA device {index} ({gpu.name}) is {gpu.arch} and computes bfloat16 natively")
    if gpu.capability >= TENSOR_CORES:
        return Availability.unavailable(f"CUDA device {index} is {gpu.arch} and has no bfloat16; use '16-{kind}'")
    return Availability.unavailable(
        f"CUDA device {index} is {gpu.arch} and has no bfloat16; use '32-true'"
        " (it has no tensor cores for float16 either)"
    )


def _fp16(index: int, gpu: GPU, kind: str) -> Availability:
    if gpu.capability >= TENSOR_CORES:
        return Availability.available(f"CUDA device {index} ({gpu.name}) is {gpu.arch} and has float16 tensor cores")
    cost = (
        "float16 autocast is no faster than fp32 and adds loss scaling"
        if kind == "mixed"
        else ("float16 is no faster than fp32 and loses precision")
    )
    return Availability.slow(f"CUDA device {index} ({gpu.name}) is {gpu.arch} and has no tensor cores, so {cost}")


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe())


def device_count() -> int:
    import torch

    # torch answers 0 when it was built without CUDA, and counts without initialising CUDA.
    return torch.cuda.device_count()


def create(request: Request) -> Precision:
    from mixprec.precision import mixed_precision, true_precision

    if OFFERED[request.precision][1] == "true":
        return true_precision(request)
    # fp16 overflows without loss scaling; bf16 has fp32's range and needs none.
    return mixed_precision(request, scaler=request.precision == "16-mixed")
