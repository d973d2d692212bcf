"""The Trainer's "fp8-mixed" precision, for ``get_precision("fp8-mixed", device, target="trainer")``.

``lightning.pytorch.Trainer(plugins=[...])`` takes only ``lightning.pytorch`` precision plugins, so
this is mixprec's Trainer class for "bf16-mixed" with the float8 layers of
:class:`~mixprec_fp8.precision.Float8Layers`; the Trainer's strategy calls ``convert_module`` in
its setup. Importing this module imports ``lightning.pytorch``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from typing_extensions import override

from mixprec._trainer import MixedPrecision
from mixprec_fp8.precision import Conversion, Float8Layers

__all__ = ["Float8Precision"]


class Float8Precision(MixedPrecision):
    """The Trainer's "fp8-mixed" precision: torchao's float8 linear layers, the rest as "bf16-mixed"."""

    def __init__(self, device: str, recipe: str = "tensorwise", module_filter: Any = None) -> None:
        super().__init__("bf16-mixed", device)
        self.precision = "fp8-mixed"
        self.layers = Float8Layers(device, recipe, module_filter)

    @property
    def recipe(self) -> str:
        return self.layers.recipe

    @property
    def conversion(self) -> Conversion | None:
        """What the last ``convert_module`` did: the float8 layers, and the others with the reason."""
        return self.layers.conversion

    @override
    def convert_module(self, module: nn.Module) -> nn.Module:
        return self.layers.convert(super().convert_module(module))

    @override
    def autocast_context_manager(self) -> torch.autocast:
        # Lightning's picks float16 for any precision but "bf16-mixed".
        return torch.autocast(self.device, dtype=torch.bfloat16, cache_enabled=False)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, recipe={self.recipe!r})"
