"""The core's own plugin: the device-independent "true" precisions, for every device type."""

from __future__ import annotations

from mixprec._backend import ANY_DEVICE, Backend
from mixprec._hookspec import hookimpl

#: Lower than any backend's default, so a backend that offers a "true" precision outranks the core.
BUILTIN_PRIORITY = -1000


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="core",
            device_type=ANY_DEVICE,
            precisions=("32-true", "64-true", "16-true", "bf16-true"),
            policy="mixprec._builtin_policy",
            priority=BUILTIN_PRIORITY,
            description="full and half precision without autocast, on any device",
        )
    ]
