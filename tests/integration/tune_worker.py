"""One rank of a two-process gloo group on the CPU calling ``mixprec.tune``; writes what it got.

``python tune_worker.py OUTDIR`` with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
set, as ``torchrun`` sets them. Each rank has a tune cache of its own (``OUTDIR/cache-RANK``) and
writes ``OUTDIR/rankN.json``: the precision it was told to train in, how many forward passes its
own process ran, and what a call that fails on rank 0 only raised here.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import mixprec

calls = 0


class Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global calls
        calls += 1
        out: torch.Tensor = self.layer(x)
        return out


def main(outdir: Path) -> None:
    rank = int(os.environ["RANK"])
    os.environ["MIXPREC_CACHE_DIR"] = str(outdir / f"cache-{rank}")
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = Counting()
    result = mixprec.tune(model, torch.randn(4, 8), device="cpu", steps=4, budget_s=60)
    # Rank 0's example makes fp32's loss infinite there: every rank must hear of rank 0's error.
    poisoned = torch.full((2, 8), math.inf if rank == 0 else 1.0)  # another shape: not in the cache
    try:
        mixprec.tune(model, poisoned, device="cpu", steps=4, budget_s=60)
        error = ""
    except mixprec.PrecisionError as exc:
        error = str(exc)
    record = {
        "precision": result.precision,
        "backend": result.backend,
        "device": result.device,
        "measurements": [m.precision for m in result.measurements],
        "calls": calls,
        "error": error,
        "object": type(result.precision_object()).__name__,
    }
    (outdir / f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
