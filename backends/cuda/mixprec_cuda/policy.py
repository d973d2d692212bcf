"""Device policy for CUDA GPUs: what each GPU computes natively, asked per device index, without initialising CUDA.

- "bf16-mixed" only where the GPU computes bfloat16 natively: compute capability 8.0 (Ampere) or
  newer, the rule of ``torch.cuda.is_bf16_supported(including_emulation=False)``, applied to the
  requested device rather than the current one. Older GPUs emulate bfloat16 and are refused, with
  the precision to use instead.
- "16-mixed" with ``torch.amp.GradScaler("cuda")`` everywhere; below compute capability 7.0 the GPU
  has no tensor cores, so it is reported "slow" and "auto" answers "32-true" there.
- "bf16-true" and "16-true" by the same rules for their dtype, above the core's priority, so that
  their status on a GPU says whether it computes the dtype (the core's fallback cannot know).

The GPUs are read by the core's :func:`mixprec.probes.cuda`, which never initialises CUDA in this
process, so that it can still fork afterwards (``Fabric(strategy="ddp_fork")``, ``"ddp_notebook"``,
Jupyter): NVML before CUDA starts, torch once it runs, ``CUDA_VISIBLE_DEVICES`` applied by torch's
rules. Where the GPUs cannot be read or numbered (no NVIDIA driver, nvidia-ml-py missing, GPUs
that differ without ``CUDA_DEVICE_ORDER=PCI_BUS_ID``), every precision is "unavailable" with the
probe's reason and what to do, and :func:`device_count` is 0 where they cannot be read: mixprec-cuda
says it cannot tell rather than initialise CUDA or guess.

ROCm builds of torch also use the device type "cuda", and have no NVML. torch takes every ROCm GPU
to compute bfloat16 natively (``is_bf16_supported()`` is True there without looking at the GPU),
and every GPU ROCm supports computes float16 natively, so all four precisions are "available" on
each ROCm GPU, which needs only the count. torch counts ROCm GPUs without starting HIP through AMD
SMI's Python module (``amdsmi``), which torch imports where it is installed; without it, torch's
count starts HIP, so mixprec-cuda reports the GPUs unavailable, saying to install it. A ROCm GPU
has no CUDA compute capability (``GPU.capability`` is None); its gfx architecture is known once HIP
is initialised.

:func:`decide` is a pure function of a :class:`mixprec.probes.CUDAProbe`; it is what the tests
exercise for GPUs this machine does not have. :func:`probe` is :func:`mixprec.probes.cuda`, which
other backends call themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixprec import Availability, Device, Request, probes
from mixprec.probes import GPU, CUDAProbe

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


def probe() -> CUDAProbe:
    """What this process knows about its CUDA GPUs now: the core's :func:`mixprec.probes.cuda`."""
    return probes.cuda()


# --- decisions ----------------------------------------------------------------------------------


def decide(precision: str, device: Device, cuda: CUDAProbe) -> Availability:
    """The availability of ``precision`` on ``device``, given what ``cuda`` found."""
    if precision not in OFFERED:
        return Availability.unavailable(f"mixprec-cuda does not offer {precision!r}")
    reason = cuda.unavailable_reason(device.index)
    if reason is not None:
        return Availability.unavailable(reason)
    index = cuda.ordinal(device.index)
    gpu = cuda.devices[index]
    dtype, kind = OFFERED[precision]
    named = f"CUDA device {index}" if gpu.name is None else f"CUDA device {index} ({gpu.name})"
    if cuda.hip_version is not None:
        seen = "" if gpu.arch is None else f" ({gpu.arch})"
        why = "torch takes every ROCm GPU to" if dtype == "bfloat16" else "every GPU ROCm supports does"
        return Availability.available(f"{named} is a ROCm GPU{seen}: {why} compute {dtype} natively")
    if gpu.capability is None:
        return Availability.unavailable(f"the compute capability of {named} is not known: it cannot be judged")
    if dtype == "bfloat16":
        return _bf16(index, named, gpu.capability, kind)
    return _fp16(named, gpu.capability, kind)


def _bf16(index: int, named: str, capability: tuple[int, int], kind: str) -> Availability:
    arch = f"sm_{capability[0]}{capability[1]}"
    if capability >= NATIVE_BF16:
        return Availability.available(f"{named} is {arch} and computes bfloat16 natively")
    if capability >= TENSOR_CORES:
        return Availability.unavailable(f"CUDA device {index} is {arch} and has no bfloat16; use '16-{kind}'")
    return Availability.unavailable(
        f"CUDA device {index} is {arch} and has no bfloat16; use '32-true' (it has no tensor cores for float16 either)"
    )


def _fp16(named: str, capability: tuple[int, int], kind: str) -> Availability:
    arch = f"sm_{capability[0]}{capability[1]}"
    if capability >= TENSOR_CORES:
        return Availability.available(f"{named} is {arch} and has float16 tensor cores")
    cost = (
        "float16 autocast is no faster than fp32 and adds loss scaling"
        if kind == "mixed"
        else "float16 is no faster than fp32 and loses precision"
    )
    return Availability.slow(f"{named} is {arch} and has no tensor cores, so {cost}")


# --- the policy module's interface --------------------------------------------------------------


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe())


def device_count() -> int:
    """The CUDA devices this process can use, counted without initialising CUDA; 0 where they cannot be read."""
    return probe().device_count


def create(request: Request) -> Precision:
    from mixprec.precision import standard_precision

    # Building a CUDA GradScaler starts no CUDA driver: mixprec.precision imports lightning.fabric, which
    # makes torch count GPUs through NVML, before it builds one.
    return standard_precision(request)
