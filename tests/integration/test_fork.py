"""A process that asked mixprec for a CUDA precision can still fork: ddp_fork, ddp_notebook, Jupyter.

A forked child cannot use CUDA if its parent started it ("Cannot re-initialize CUDA in forked
subprocess"). Both tests run in a fresh process, because what counts is a process in which
nothing has started CUDA yet and Lightning has not been imported (importing it changes how torch
answers ``is_available()``), and because other tests in this session may have started CUDA:

- on this machine's CPU build, a simulated CUDA machine (tests/backends/simulated_cuda.py) whose
  ways into CUDA are tripwires: listing, explaining and building every precision reach none;
- where GPUs are present, a real ``Fabric(strategy="ddp_fork")`` after ``get_precision(..., "cuda")``:
  each forked worker trains a step on its GPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import mixprec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: Every precision get_precision serves on "cuda" (mixprec-cuda's and the core's), "16-mixed" first:
#: its GradScaler asks torch whether CUDA is available, before any Lightning class is imported.
SERVED = ("16-mixed", "bf16-mixed", "bf16-true", "16-true", "32-true", "64-true")


def fresh_process(call: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``call`` (an expression on this module) in a new Python process, in the repository's root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXPREC_", "PYTORCH_NVML", "CUDA_"))}
    code = f"from tests.integration import test_fork; test_fork.{call}"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# --- a simulated CUDA machine -------------------------------------------------------------------


def simulated_session() -> None:
    """In a fresh process: what a user does before forking, on a simulated H100; prints what started CUDA."""
    # Under a simulated CUDA build torch._dynamo imports CUDA-only symbols this CPU build lacks; a real
    # CUDA build has them. Lightning imports it, so it is imported before the simulation starts.
    import torch._dynamo

    from mixprec import cli
    from tests.backends.simulated_cuda import Card, simulate

    sim = simulate(pytest.MonkeyPatch(), [Card("NVIDIA H100 80GB HBM3", (9, 0), "GPU-6a1e0c34")])
    with contextlib.redirect_stdout(io.StringIO()) as listing:
        listed = cli.main(["list"])
    mixprec.available()
    mixprec.explain("auto", "cuda")
    built = [
        type(mixprec.get_precision(precision, "cuda", target=target)).__name__  # type: ignore[call-overload]
        for precision in SERVED
        for target in ("fabric", "trainer")
    ]
    result = {
        "listed": listed,
        "listing": listing.getvalue(),
        "built": built,
        "tripped": sim.tripped,
        "initialised": torch.cuda.is_initialized(),
    }
    print(json.dumps(result))


def test_a_fresh_process_lists_explains_and_builds_on_a_simulated_gpu_without_starting_cuda() -> None:
    run = fresh_process("simulated_session()")
    assert run.returncode == 0, run.stderr[-6000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["tripped"] == []
    assert result["initialised"] is False
    assert result["listed"] == 0
    assert "NVIDIA H100 80GB HBM3" in result["listing"]
    assert len(result["built"]) == 2 * len(SERVED)


# --- real GPUs ----------------------------------------------------------------------------------


def fork_training(devices: int, outdir: str) -> None:
    """In a fresh process: get_precision on cuda, then Fabric's ddp_fork workers each train a step."""
    from lightning.fabric import Fabric

    precision = mixprec.get_precision("16-mixed", "cuda")
    started_before_fork = torch.cuda.is_initialized()
    fabric = Fabric(accelerator="cuda", devices=devices, strategy="ddp_fork", plugins=[precision])
    fabric.launch(fork_worker, outdir)
    parent = {"started_before_fork": started_before_fork, "started_after_launch": torch.cuda.is_initialized()}
    Path(outdir, "parent.json").write_text(json.dumps(parent))


def fork_worker(fabric: Any, outdir: str) -> None:
    """One forked worker: a training step through the plugin made before the fork, on this rank's GPU."""
    model = torch.nn.Linear(32, 8)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    computed: list[torch.dtype] = []  # the layer's own output, before Fabric converts it back to float32
    model.module.register_forward_hook(lambda module, inputs, output: computed.append(output.dtype))
    fabric.backward(model(torch.randn(16, 32, device=fabric.device)).pow(2).mean())
    optimizer.step()
    result = {
        "device": str(fabric.device),
        "dtype": str(computed[0]),
        "stepped": not torch.equal(model.weight.detach(), before),
        "scale": fabric.strategy.precision.scaler.get_scale(),
    }
    Path(outdir, f"rank{fabric.global_rank}.json").write_text(json.dumps(result))


@pytest.mark.parametrize("devices", [1, 2])
def test_ddp_fork_workers_train_a_step_after_get_precision_on_cuda(tmp_path: Path, devices: int) -> None:
    if torch.cuda.device_count() < devices:  # counts through NVML, without starting CUDA
        pytest.skip(f"needs {devices} CUDA GPU(s); {torch.cuda.device_count()} here")
    run = fresh_process(f"fork_training({devices}, {str(tmp_path)!r})")
    assert run.returncode == 0, run.stderr[-6000:]
    parent = json.loads((tmp_path / "parent.json").read_text())
    assert parent == {"started_before_fork": False, "started_after_launch": False}
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(devices)]
    assert [rank["device"] for rank in ranks] == [f"cuda:{rank}" for rank in range(devices)]
    assert all(rank["stepped"] and rank["dtype"] == "torch.float16" and rank["scale"] > 0 for rank in ranks)
