"""Does ``mixprec.tune`` pick the fastest safe precision? Its pick against an independent measurement.

Usage: ``python benchmarks/tune.py [--quick] [--json OUT] [--threads N] [--clock cpu|wall]``

For each of four models of different shapes (a character-level GPT of nanoGPT's kind, a tiny MLP,
the GPT block of ``models.py``, a small conv net), on the CPU:

1. ``mixprec.tune`` measures the model (default candidates, a fresh cache, AdamW) and picks;
2. then, in the same process, every precision tune found safe is timed again independently, each
   on its own copy, in interleaved rounds (``harness.compare``), with the harness's clock;
3. reported: tune's pick, the fastest safe precision of the independent measurement, the pick's
   speed relative to that one (median of per-round ratios; target >= 0.95), and tune's own cost
   (wall seconds, and its steps).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import harness
import torch
from models import Block, Config, build
from torch import nn
from torch.nn import functional as F

import mixprec

#: The pick must train at least this fraction of the fastest safe precision's speed.
TARGET_SPEED = 0.95


@dataclass(frozen=True)
class Case:
    """A model factory (seeded), one batch, and its loss."""

    name: str
    describe: str
    model: Callable[[], nn.Module]
    example: torch.Tensor
    loss_fn: Callable[[Any], torch.Tensor]


class CharGPT(nn.Module):
    """A character-level GPT as nanoGPT's shakespeare-char config, scaled to a shared CPU: embeddings, blocks, head."""

    def __init__(self, vocab: int, dim: int, heads: int, layers: int, seq: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(seq, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        out: torch.Tensor = self.head(self.norm(self.blocks(x)))
        return out


def char_gpt() -> Case:
    vocab, seq, batch = 65, 64, 16
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(vocab, (batch, seq + 1), generator=generator)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def model() -> nn.Module:
        torch.manual_seed(0)
        return CharGPT(vocab, dim=128, heads=4, layers=4, seq=seq)

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    return Case("char-gpt", f"character GPT, 4 layers, dim 128, seq {seq}, batch {batch}", model, inputs, loss)


def from_config(config: Config) -> Case:
    _, x, y = build(config)

    def model() -> nn.Module:
        return build(config)[0]

    def loss(output: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, y)

    return Case(config.name, config.describe(), model, x, loss)


def conv_net() -> Case:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 32, 32, generator=generator)
    labels = torch.randint(10, (32,), generator=generator)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    return Case("conv", "conv net, 2 conv layers (16, 32 channels), 32x32 images, batch 32", model, images, loss)


def cases() -> list[Case]:
    return [
        char_gpt(),
        from_config(Config("tiny-mlp", "mlp", width=64, depth=2, batch=32)),
        from_config(Config("gpt-block", "block", width=256, depth=4, batch=8, seq=64)),
        conv_net(),
    ]


def step(precision: str, backend: str, case: Case) -> Callable[[], None]:
    """One training step of ``case`` through the precision object's calls, on a copy of its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixprec.PrecisionWarning)  # "slow here" is what is measured
        obj = mixprec.get_precision(precision, "cpu", backend=backend)
    model = obj.convert_module(case.model())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        args, kwargs = obj.convert_input(((case.example,), {}))
        with obj.forward_context():
            out = model(*args, **kwargs)
        loss = case.loss_fn(obj.convert_output(out))
        obj.backward(loss, model)
        obj.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    return run


def measure(report: harness.Report, case: Case, budget_s: float, rounds: int, min_time: float, clock: str) -> None:
    model = case.model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    result = mixprec.tune(
        model, case.example, device="cpu", loss_fn=case.loss_fn, optimizer=optimizer, budget_s=budget_s, refresh=True
    )
    tune_s = time.perf_counter() - start
    print(result.table(), result.reason, *result.cut, sep="\n", flush=True)
    safe = {m.precision: m.backend for m in result.measurements if m.safe}
    steps = {p: step(p, backend, case) for p, backend in safe.items()}
    compared = harness.compare(steps, rounds=rounds, min_time=min_time, warmup=2, timer=harness.clock(clock))
    fastest = min(safe, key=compared.median)
    # time(pick) / time(fastest) per round: its inverse is the pick's speed relative to the fastest.
    slowdown = compared.ratio(result.precision, fastest)
    row: dict[str, Any] = {"model": case.name, "describe": case.describe, "pick": result.precision}
    row.update({f"{p}_ms": compared.median(p) * 1e3 for p in safe})
    row.update(
        fastest_safe=fastest,
        pick_speed_vs_fastest_safe=1.0 / slowdown[1],
        tune_seconds=round(tune_s, 2),
        tune_steps={m.precision: m.steps for m in result.measurements},
        tune_speedups={m.precision: round(m.speedup, 3) for m in result.measurements},
        refused=[m.precision for m in result.measurements if not m.safe],
        cut=list(result.cut),
    )
    report.result(**row)
    report.target(
        f"tune {case.name}: fastest safe time / pick's time (speed of the pick) >= {TARGET_SPEED}",
        slowdown[1],
        at_most=1 / TARGET_SPEED,
    )


def main() -> None:
    args = harness.arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    budget_s, rounds, min_time = (5.0, 3, 0.02) if args.quick else (20.0, 7, 0.1)
    settings = {"budget_s": budget_s, "rounds": rounds, "min_time_s": min_time, "threads": args.threads}
    settings["clock"] = args.clock
    report = harness.Report("tune", settings)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MIXPREC_CACHE_DIR"] = cache
        for case in cases():
            print(f"{case.name}: {case.describe}", flush=True)
            measure(report, case, budget_s, rounds, min_time, args.clock)
    report.write(args.json, args.threads)


if __name__ == "__main__":
    main()
