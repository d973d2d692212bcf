"""The policy of backend "fp8": "fp8-mixed" on the CPU, emulated (see :mod:`mixprec_fp8.policy`)."""

from __future__ import annotations

from mixprec_fp8.policy import availability, create

__all__ = ["availability", "create", "device_count"]


def device_count() -> int:
    return 1
