from __future__ import annotations

import torch
from lightning.fabric.plugins.precision import Precision

import mixprec


def test_get_precision_returns_a_lightning_precision_for_32_true_on_cpu() -> None:
    precision = mixprec.get_precision("32-true", "cpu")
    assert isinstance(precision, Precision)
    assert precision.mixprec_backend == "core"


def test_get_precision_bf16_mixed_on_cpu_autocasts_linear_layers_to_bfloat16() -> None:
    precision = mixprec.get_precision("bf16-mixed", "cpu")
    with precision.forward_context():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
