"""mixprec-mps: mixed precision on Apple GPUs. This module is the plugin; it imports neither torch nor lightning."""

from __future__ import annotations

from mixprec import Backend, hookimpl

__all__ = ["mixprec_backends"]


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="mps",
            device_type="mps",
            precisions=("bf16-mixed", "16-mixed", "bf16-true", "16-true"),
            policy="mixprec_mps.policy",
            description="torch.autocast on Apple GPUs; each dtype where the installed torch and macOS support it",
        )
    ]
