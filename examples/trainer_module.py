"""A LightningModule trained by ``lightning.pytorch.Trainer`` with mixprec's plugin, checkpointed and resumed.

    python examples/trainer_module.py                          # "auto": the fastest safe precision here
    python examples/trainer_module.py --precision 16-mixed     # fp16 with a GradScaler, even on a CPU
    python examples/trainer_module.py --device cuda            # needs mixprec-cuda

The Trainer takes only its own plugin classes, hence ``target="trainer"``. It unscales the
gradients before ``gradient_clip_val`` clips them, skips a step whose fp16 gradients overflowed,
and stores the GradScaler's state in every checkpoint: ``fit(ckpt_path=...)`` resumes with it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from mixprec import get_precision


class Regression(LightningModule):
    """Fits y = sum(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))

    def on_train_start(self) -> None:
        state = self.trainer.precision_plugin.state_dict()
        self.print(f"starting at step {self.trainer.global_step} with precision state {state}")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.mse_loss(self.net(inputs), targets)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
        inputs = torch.randn(512, 32)
        return DataLoader(TensorDataset(inputs, inputs.sum(dim=1, keepdim=True)), batch_size=64, shuffle=True)


def make_trainer(precision: str, device: str, max_steps: int) -> Trainer:
    return Trainer(
        accelerator=device,
        devices=1,
        plugins=[get_precision(precision, device, target="trainer")],
        max_steps=max_steps,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=24, help="a multiple of 8, the batches in an epoch")
    parser.add_argument("--checkpoint", type=Path, default=Path(tempfile.mkdtemp()) / "trainer_module.ckpt")
    args = parser.parse_args()

    trainer = make_trainer(args.precision, args.device, max_steps=args.steps)
    trainer.fit(Regression())
    trainer.save_checkpoint(args.checkpoint)
    plugin = trainer.precision_plugin
    print(f"trained with {plugin!r}; saved {args.checkpoint} with precision state {plugin.state_dict()}")

    # A new process would start here: a new Trainer and module, resumed from the checkpoint.
    trainer = make_trainer(args.precision, args.device, max_steps=2 * args.steps)
    trainer.fit(Regression(), ckpt_path=args.checkpoint)
    print(f"now at step {trainer.global_step} with precision state {trainer.precision_plugin.state_dict()}")


if __name__ == "__main__":
    main()
