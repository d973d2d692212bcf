"""mixprec-accelerator: mixed precision on any torch accelerator. This module is the plugin; it imports neither
torch nor lightning.

It serves every device type torch reaches through ``torch.accelerator`` or a registered device module
(Intel GPUs as ``xpu``, Ascend NPUs and other out-of-tree devices through PrivateUse1, Gaudi as
``hpu``), and leaves "cpu", "cuda" and "mps" to their own backends. Its priority is below every
backend's default, so a vendor's own backend wins wherever one is installed.
"""

from __future__ import annotations

from mixprec import ANY_DEVICE, Backend, hookimpl

__all__ = ["PRIORITY", "mixprec_backends"]

#: Below every backend's default (0), above only the core's device-blind "true" precisions (-1000).
PRIORITY = -500


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="accelerator",
            device_type=ANY_DEVICE,
            precisions=("bf16-mixed", "16-mixed", "bf16-true", "16-true"),
            policy="mixprec_accelerator.policy",
            priority=PRIORITY,
            description="any torch accelerator by its device module's own word; native speed unknown",
        )
    ]
