"""The policy of backend "fp8-cuda": "fp8-mixed" on CUDA GPUs (see :mod:`mixprec_fp8.policy`)."""

from __future__ import annotations

from mixprec import probes
from mixprec_fp8.policy import availability, create

__all__ = ["availability", "create", "device_count"]


def device_count() -> int:
    """The CUDA devices, counted by the core's probe without initialising CUDA."""
    return probes.cuda().device_count
