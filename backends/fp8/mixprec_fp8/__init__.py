"""mixprec-fp8: "fp8-mixed" training through torchao. This module is the plugin; it imports neither torch nor lightning.

Two backends, one per device type, with one policy each (a policy's ``device_count()`` counts one
device type): "fp8-cuda" computes float8 matmuls on CUDA GPUs of compute capability 8.9 or newer,
"fp8" emulates them on the CPU, for testing fp8 numerics where there is no such GPU (it is slow).
"""

from __future__ import annotations

from mixprec import Backend, hookimpl

__all__ = ["mixprec_backends"]


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="fp8-cuda",
            device_type="cuda",
            precisions=("fp8-mixed",),
            policy="mixprec_fp8.cuda",
            # Lightning's FSDP shards with FSDP1, under which torchao's float8 layers are not built or tested.
            strategy_families=(),
            description="torchao float8 matmuls on CUDA GPUs of compute capability 8.9+, the rest as bf16-mixed",
        ),
        Backend(
            name="fp8",
            device_type="cpu",
            precisions=("fp8-mixed",),
            policy="mixprec_fp8.cpu",
            strategy_families=(),
            description="torchao float8 matmuls emulated on the CPU: fp8 numerics for tests, slower than bf16-mixed",
        ),
    ]
