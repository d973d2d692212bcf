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
            precisions=("bf16-mixed", "16-mixed", "bf16-true", "16-true"),
            policy="mixprec_cpu.policy",
            description="bf16 and fp16 on the CPU, fast only where the CPU computes them natively",
        )
    ]
