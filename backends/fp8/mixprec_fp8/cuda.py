"""The policy of backend "fp8-cuda": "fp8-mixed" on CUDA GPUs (see :mod:`mixprec_fp8.policy`)."""

from __future__ import annotations

from mixprec_fp8.policy import availability, create

__all__ = ["availability", "create", "device_count"]


def device_count() -> int:
    """The CUDA devices, counted by mixprec-cuda without initialising CUDA."""
    from mixprec_cuda.policy import device_count as count

    return count()
