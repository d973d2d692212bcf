"""The guide's advice on changing autocast holds in Lightning: Fabric and the Trainer both call forward_context().

The classes are the guide's own block, run as a reader copies it; what autocast does inside a
forward is read from torch while the model runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins.precision import MixedPrecision as FabricMixedPrecision
from lightning.pytorch.plugins.precision import MixedPrecision as TrainerMixedPrecision
from torch import nn

from mixprec.precision import AutocastPrecision

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-backend.md"


def _guide_classes() -> dict[str, Any]:
    section = GUIDE.read_text().split("### Changing autocast", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(GUIDE), "exec"), namespace)
    return namespace


class Probe(nn.Module):
    """Records whether autocast runs, and with its cache, while it computes."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.is_autocast_cache_enabled()))
        return self.layer(x)


def _fabric_forward(precision: Any) -> list[tuple[bool, bool]]:
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[precision])
    model = fabric.setup_module(Probe())
    model(torch.ones(2, 4))
    return model.module.seen  # type: ignore[no-any-return]


def test_the_guides_forward_context_override_is_what_fabric_runs_the_forward_in() -> None:
    uncached = _guide_classes()["UncachedBf16"]("bf16-mixed", "cpu")
    assert _fabric_forward(uncached) == [(True, False)]


def test_the_guides_forward_context_override_is_what_the_trainer_runs_a_step_in() -> None:
    uncached = _guide_classes()["UncachedBf16ForTrainer"]("bf16-mixed", "cpu")
    model = Probe()
    # The Trainer runs each training step in the plugin's train_step_context(), which enters forward_context().
    with uncached.train_step_context():
        model(torch.ones(2, 4))
    assert model.seen == [(True, False)]


def test_an_autocast_context_manager_override_alone_changes_nothing_in_fabric() -> None:
    class Uncached(AutocastPrecision):
        def autocast_context_manager(self) -> torch.autocast:
            return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)

    assert _fabric_forward(Uncached("bf16-mixed", "cpu")) == [(True, True)]


def test_only_the_trainers_class_has_autocast_context_manager() -> None:
    assert hasattr(TrainerMixedPrecision, "autocast_context_manager")
    assert not hasattr(FabricMixedPrecision, "autocast_context_manager")
