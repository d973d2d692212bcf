"""mixprec-cpu: mixed precision on CPUs. This module is the plugin; it imports neither torch nor lightning."""

from __future__ import annotations

from mixprec import Backend, hookimpl

__all__ = ["mixprec_backends"]


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="cpu",
            device_type="cpu",
            precisions=("bf16-mixed", "16-mixed"),
            policy="mixprec_cpu.policy",
            description="torch.autocast on the CPU; bf16 and fp16 are fast only where the CPU computes them natively",
        )
    ]
