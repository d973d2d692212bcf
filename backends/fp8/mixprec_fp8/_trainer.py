"""The Trainer's "fp8-mixed" precision, for ``get_precision("fp8-mixed", device, target="trainer")``.

``lightning.pytorch.Trainer(plugins=[...])`` takes only ``lightning.pytorch`` precision plugins, so
this is mixprec's Trainer class for "bf16-mixed" with the float8 layers of
:class:`~mixprec_fp8.precision.Float8Layers`; the Trainer's strategy calls ``convert_module`` in
its setup. Importing this module imports ``lightning.pytorch``.
"""

from __future__ import annotations

import torch
from typing_extensions import override

from mixprec.precision import TrainerAutocastPrecision
from mixprec_fp8.precision import Float8Conversion

__all__ = ["Float8Precision"]


class Float8Precision(Float8Conversion, TrainerAutocastPrecision):
    """The Trainer's "fp8-mixed" precision: torchao's float8 linear layers, the rest as "bf16-mixed"."""

    @override
    def autocast_context_manager(self) -> torch.autocast:
        # Lightning's picks float16 for any precision but "bf16-mixed".
        return torch.autocast(self.device, dtype=torch.bfloat16, cache_enabled=False)
