"""Which low-precision dtypes this CPU computes natively, read from torch and ``/proc/cpuinfo``.

A CPU without native bfloat16 (AVX512-BF16, or AMX, whose tiles compute bfloat16) emulates it, and
mixed precision then runs several times slower than fp32. The same holds for float16, native only
with AVX512-FP16 or AMX-FP16. Only x86 features are recognised: elsewhere every flag is False.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPUFeatures", "cpu"]

#: Where Linux lists the CPU's feature flags; read where torch lacks a probe for a flag.
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CPUFeatures:
    """The CPU's low-precision features: what it computes natively, as torch and the kernel report it."""

    avx512_bf16: bool
    #: AMX tiles; every CPU with AMX computes bfloat16 on them (AMX-BF16).
    amx_tile: bool
    avx512_fp16: bool
    amx_fp16: bool

    @property
    def native_bf16(self) -> tuple[str, ...]:
        """The names of the features that compute bfloat16 natively; empty when it is emulated."""
        return tuple(name for name, has in (("AVX512-BF16", self.avx512_bf16), ("AMX", self.amx_tile)) if has)

    @property
    def native_fp16(self) -> tuple[str, ...]:
        """The names of the features that compute float16 natively; empty when it is emulated."""
        return tuple(name for name, has in (("AVX512-FP16", self.avx512_fp16), ("AMX-FP16", self.amx_fp16)) if has)

    def native(self, dtype: str) -> tuple[str, ...]:
        """The features that compute ``dtype`` ("bfloat16" or "float16") natively; empty when it is emulated.

        Raises:
            ValueError: ``dtype`` is neither "bfloat16" nor "float16".
        """
        if dtype == "bfloat16":
            return self.native_bf16
        if dtype == "float16":
            return self.native_fp16
        raise ValueError(f"CPUFeatures.native() knows 'bfloat16' and 'float16', not {dtype!r}")


def cpuinfo_flags(text: str) -> frozenset[str]:
    """The feature flags of the first processor in the text of ``/proc/cpuinfo``; empty where there are none."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _read_cpuinfo() -> frozenset[str]:
    try:
        return cpuinfo_flags(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


@functools.cache
def cpu() -> CPUFeatures:
    """This CPU's features, read once per process; starts no thread and no device runtime (fork-safe).

    torch's own probes (``torch.cpu._is_avx512_bf16_supported`` and its siblings, private to torch)
    answer where this torch has them; a flag whose probe this torch lacks is read from
    ``/proc/cpuinfo`` (Linux), and is False where neither can say.
    """
    import torch
    import torch.cpu

    kernel = _read_cpuinfo()

    def flag(probe: str, cpuinfo: str) -> bool:
        check = getattr(torch.cpu, probe, None)
        return bool(check()) if callable(check) else cpuinfo in kernel

    try:
        # oneDNN's float16 check: AVX512-FP16, or AVX-NE-CONVERT (conversions only) on CPUs without AVX512.
        onednn_fp16 = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        onednn_fp16 = "avx512_fp16" in kernel
    return CPUFeatures(
        avx512_bf16=flag("_is_avx512_bf16_supported", "avx512_bf16"),
        amx_tile=flag("_is_amx_tile_supported", "amx_tile"),
        avx512_fp16=flag("_is_avx512_supported", "avx512f") and onednn_fp16,
        amx_fp16=flag("_is_amx_fp16_supported", "amx_fp16"),
    )
