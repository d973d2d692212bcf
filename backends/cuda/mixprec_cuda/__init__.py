"""mixprec-cuda: mixed precision on CUDA GPUs. This module is the plugin; it imports neither torch nor lightning."""

from __future__ import annotations

from mixprec import Backend, hookimpl

__all__ = ["mixprec_backends"]


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="cuda",
            device_type="cuda",
            precisions=("bf16-mixed", "16-mixed", "bf16-true", "16-true"),
            policy="mixprec_cuda.policy",
            description="torch.autocast on CUDA GPUs: fp16 with a GradScaler, bf16 where the GPU computes it natively",
        )
    ]
