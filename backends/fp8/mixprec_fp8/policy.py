"""Where "fp8-mixed" runs, and building its object: the decisions both of mixprec-fp8's backends share.

- On CUDA, torchao's float8 matmuls (``torch._scaled_mm``) need float8 tensor cores: compute
  capability 8.9 (Ada) or newer. Below, "fp8-mixed" is unavailable, saying which precision to use
  instead. The GPU is read through the core's probe, :func:`mixprec.probes.cuda`, which never
  initialises CUDA. ROCm GPUs
  are refused: the float8 types of AMD's MI300 (``float8_e4m3fnuz``) are not those of the
  standard contract (``float8_e4m3fn``).
- On the CPU there are no float8 matmul units: torchao's emulation rounds each matmul's operands
  to float8 with the same dynamic scaling and multiplies them in float32, which is what float8
  tensor cores compute. It is numerically fp8 training and "slow": a training step of a
  transformer MLP block measured 4.5-6.8x slower than "bf16-mixed" and 2.9-3.7x slower than
  "32-true" (widths 256-1024, 256 tokens, one thread of an Intel Xeon with AMX;
  benchmarks/fp8.py). It is for testing fp8 numerics, never for speed.
- Everywhere, torchao must be installed, version 0.18 or newer; its version is read from the
  installed distribution's metadata, so that listing imports neither torch nor torchao.

:func:`decide` is a pure function of a :class:`Float8Probe`; the tests feed it probes of machines
this one is not. :func:`probe` reads this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from mixprec import Availability, Device, Request, probes
from mixprec.probes import CUDAProbe

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision

__all__ = ["FLOAT8_CAPABILITY", "MIN_TORCHAO", "Float8Probe", "availability", "create", "decide", "probe"]

#: The oldest torchao whose float8 training mixprec-fp8 is built and tested on.
MIN_TORCHAO = (0, 18)
#: Compute capability from which a GPU has float8 tensor cores (Ada Lovelace, sm_89).
FLOAT8_CAPABILITY = (8, 9)
_INSTALL = "pip install 'torchao>=0.18'"


@dataclass(frozen=True)
class Float8Probe:
    """What decides where "fp8-mixed" runs: torchao's installed version and, for a CUDA device, the GPUs."""

    #: The installed torchao's version; None when it is not installed.
    torchao: str | None
    #: The core's probe of the CUDA GPUs (:func:`mixprec.probes.cuda`); None when the device is not a CUDA one.
    cuda: CUDAProbe | None = None


def probe(device_type: str) -> Float8Probe:
    """Read this machine for a device of ``device_type``, without importing torchao or initialising CUDA."""
    try:
        version: str | None = metadata.version("torchao")
    except metadata.PackageNotFoundError:
        version = None
    if device_type != "cuda":
        return Float8Probe(version)
    return Float8Probe(version, probes.cuda())


def decide(precision: str, device: Device, found: Float8Probe) -> Availability:
    """The availability of ``precision`` on ``device``, given what ``found`` says of this machine."""
    if precision != "fp8-mixed":
        return Availability.unavailable(f"mixprec-fp8 offers only 'fp8-mixed', not {precision!r}")
    problem = _torchao_problem(found.torchao)
    if problem is not None:
        return Availability.unavailable(problem)
    if device.type == "cpu":
        if device.index not in (None, 0):
            return Availability.unavailable(f"there is one CPU device; {device} does not exist, use 'cpu'")
        return Availability.slow(
            "the CPU has no float8 matmuls, so torchao emulates them (float8 operands, float32 products):"
            " fp8 numerics for tests, several times slower than 'bf16-mixed'; train with 'bf16-mixed' or '32-true'"
        )
    if device.type != "cuda" or found.cuda is None:
        return Availability.unavailable(f"mixprec-fp8 serves 'cpu' and 'cuda' devices, not {device.type!r}")
    return _cuda(device, found.cuda)


def _torchao_problem(version: str | None) -> str | None:
    if version is None:
        return f"torchao is not installed; fp8-mixed trains through its float8 layers: {_INSTALL}"
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return f"the installed torchao's version {version!r} cannot be read; reinstall it: {_INSTALL}"
    if (int(match.group(1)), int(match.group(2))) < MIN_TORCHAO:
        return f"torchao {version} is too old for mixprec-fp8, which needs 0.18 or newer: {_INSTALL}"
    return None


def _cuda(device: Device, cuda: CUDAProbe) -> Availability:
    reason = cuda.unavailable_reason(device.index)
    if reason is not None:
        return Availability.unavailable(reason)
    index = cuda.ordinal(device.index)
    gpu = cuda.gpu(device.index)
    if cuda.cuda_version is None or gpu.capability is None:
        return Availability.unavailable(
            f"cuda:{index} is a ROCm GPU: its float8 types (float8_e4m3fnuz) are not the float8_e4m3fn of"
            " 'fp8-mixed', which mixprec-fp8 serves on NVIDIA GPUs only; use 'bf16-mixed'"
        )
    if gpu.capability >= FLOAT8_CAPABILITY:
        return Availability.available(f"CUDA device {index} ({gpu.name}) is {gpu.arch} and has float8 tensor cores")
    instead = "'bf16-mixed'" if gpu.capability >= (8, 0) else "'16-mixed'" if gpu.capability >= (7, 0) else "'32-true'"
    return Availability.unavailable(
        f"CUDA device {index} is {gpu.arch}, and float8 matmuls need compute capability 8.9 or newer"
        f" (Ada, Hopper, Blackwell); use {instead}"
    )


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe(device.type))


def create(request: Request) -> Precision:
    from mixprec_fp8.precision import build

    return build(request)
