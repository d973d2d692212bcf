"""A Lightning Fabric training loop with the precision mixprec picks, a checkpoint, and a resume.

    python examples/fabric_loop.py                          # "auto": the fastest safe precision here
    python examples/fabric_loop.py --precision 16-mixed     # fp16 with a GradScaler, even on a CPU
    python examples/fabric_loop.py --device cuda            # needs mixprec-cuda

The checkpoint holds the precision object beside the model and the optimizer: Fabric saves it by
calling its ``state_dict()`` and restores it with ``load_state_dict()``, so a GradScaler's scale
and growth tracker survive the restart. Leave it out and a resumed fp16 run starts from the
initial scale again. The precision comes first in the dict given to ``fabric.load``: Fabric
restores the entries in that dict's order, so a checkpoint of another precision is refused before
the model and the optimizer are overwritten.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins import Precision
from torch import nn

from mixprec import get_precision


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))


def make_fabric(precision: str, device: str) -> tuple[Fabric, nn.Module, torch.optim.Optimizer, Precision]:
    """A Fabric with mixprec's plugin, and a model and optimizer set up by it."""
    plugin = get_precision(precision, device)
    fabric = Fabric(accelerator=device, devices=1, plugins=[plugin])
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    return fabric, model, optimizer, plugin


def train(fabric: Fabric, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> float:
    """Fit y = sum(x) for ``steps`` steps, clipping gradients; returns the last loss.

    ``fabric.clip_gradients`` unscales the gradients first. ``error_if_nonfinite=False`` lets an fp16 step
    whose gradients overflowed reach the GradScaler, which skips it and lowers the scale, instead of raising.
    """
    loss = 0.0
    for _ in range(steps):
        inputs = torch.randn(64, 32, device=fabric.device)
        targets = inputs.sum(dim=1, keepdim=True)
        optimizer.zero_grad()
        batch_loss = nn.functional.mse_loss(model(inputs), targets)
        fabric.backward(batch_loss)
        fabric.clip_gradients(model, optimizer, max_norm=1.0, error_if_nonfinite=False)
        optimizer.step()
        loss = batch_loss.item()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--checkpoint", type=Path, default=Path(tempfile.mkdtemp()) / "fabric_loop.ckpt")
    args = parser.parse_args()

    fabric, model, optimizer, precision = make_fabric(args.precision, args.device)
    fabric.print(f"training with {precision!r}")
    loss = train(fabric, model, optimizer, args.steps)
    fabric.save(args.checkpoint, {"precision": precision, "model": model, "optimizer": optimizer})
    fabric.print(f"loss {loss:.4f}; saved {args.checkpoint} with precision state {precision.state_dict()}")

    # A new process would start here: the same objects, then load what the checkpoint holds into them.
    fabric, model, optimizer, precision = make_fabric(args.precision, args.device)
    # The precision first: a mismatched precision state is refused before anything else is loaded.
    fabric.load(args.checkpoint, {"precision": precision, "model": model, "optimizer": optimizer})
    fabric.print(f"resumed with precision state {precision.state_dict()}")
    loss = train(fabric, model, optimizer, args.steps)
    fabric.print(f"loss {loss:.4f} after resuming")


if __name__ == "__main__":
    main()
