"""Two-process Fabric DDP training on the CPU in 16-mixed, writing what each rank ends with.

``python ddp_worker.py ddp OUTDIR`` is a user's script: Fabric's "ddp" launcher starts the second
rank by running the same command again. For "ddp_spawn" the test calls :func:`train` through
``fabric.launch``, so the plugin made in the test's process reaches the ranks pickled.

Each rank writes ``rank{N}.pt``: its weights and scaler state after some ordinary steps, and again
after a step whose input holds an inf on rank 1 only, and the precision's telemetry.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins.precision import Precision
from torch import nn

import mixprec

STEPS = 3
#: The GradScaler's initial scale; it grows every second step (growth_interval=2), so the steps move it.
INIT_SCALE = 1024.0


def make_precision() -> Precision:
    return mixprec.get_precision("16-mixed", "cpu", init_scale=INIT_SCALE, growth_interval=2)


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def train(fabric: Fabric, outdir: str) -> None:
    """Train on this rank's own data; rank 1 gets an inf input in the last step."""
    rank = fabric.global_rank
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.05))
    inputs, targets = torch.randn(16, 8), torch.randn(16, 1)

    def step(batch: torch.Tensor) -> None:
        optimizer.zero_grad()
        fabric.backward(nn.functional.mse_loss(model(batch), targets))
        optimizer.step()

    for _ in range(STEPS):
        step(inputs)
    trained, trained_state = weights(model), fabric.strategy.precision.state_dict()
    overflowing = inputs.clone()
    if rank == 1:
        overflowing[0, 0] = float("inf")
    step(overflowing)
    result = {
        "trained": trained,
        "trained_state": trained_state,
        "after_overflow": weights(model),
        "after_overflow_state": fabric.strategy.precision.state_dict(),
        "telemetry": dataclasses.asdict(fabric.strategy.precision.telemetry),
    }
    torch.save(result, Path(outdir) / f"rank{rank}.pt")
    # Leave together and tear gloo down before the interpreter exits: a rank that exits while the
    # other's gloo threads still talk to it aborts ("terminate called without an active exception").
    fabric.barrier()
    torch.distributed.destroy_process_group()


def main(strategy: str, outdir: str) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy, plugins=[make_precision()])
    fabric.launch()
    train(fabric, outdir)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
