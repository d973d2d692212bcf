"""Fabric DDP on the CPU with gloo, two processes, in 16-mixed: "ddp" (a launched script) and "ddp_spawn".

One launch per strategy; the ranks write what they end with (see ``ddp_worker.py``) and the
assertions run here.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins.environments.lightning import find_free_network_port

from tests.integration import ddp_worker

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")]


def rank_results(outdir: Path) -> list[dict[str, Any]]:
    return [torch.load(outdir / f"rank{rank}.pt") for rank in (0, 1)]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each rank of a "ddp" run of the worker script wrote."""
    outdir = tmp_path_factory.mktemp("ddp")
    run = subprocess.run(
        [sys.executable, ddp_worker.__file__, "ddp", str(outdir)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return rank_results(outdir)


@pytest.fixture(scope="module")
def ddp_spawn_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each rank of a "ddp_spawn" run wrote, with the plugin made here and pickled to the ranks."""
    outdir = tmp_path_factory.mktemp("ddp_spawn")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MASTER_PORT", str(find_free_network_port()))  # the launcher sets it in this process
        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn", plugins=[ddp_worker.make_precision()])
        fabric.launch(functools.partial(ddp_worker.train, outdir=str(outdir)))
    return rank_results(outdir)


@pytest.fixture(params=["ddp", "ddp_spawn"])
def results(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return request.getfixturevalue(f"{request.param}_results")  # type: ignore[no-any-return]


def test_both_ranks_hold_identical_weights_after_training(results: list[dict[str, Any]]) -> None:
    rank0, rank1 = results

    assert torch.equal(rank0["trained"], rank1["trained"])


def test_both_ranks_hold_identical_scaler_states_that_training_moved(results: list[dict[str, Any]]) -> None:
    rank0, rank1 = results

    assert rank0["trained_state"] == rank1["trained_state"]
    assert rank0["trained_state"]["scale"] == 2 * ddp_worker.INIT_SCALE


def test_a_step_that_overflows_on_one_rank_is_skipped_on_both(results: list[dict[str, Any]]) -> None:
    for rank in results:
        assert torch.equal(rank["after_overflow"], rank["trained"])
        assert rank["after_overflow_state"]["scale"] == rank["trained_state"]["scale"] / 2
        assert rank["after_overflow_state"]["_growth_tracker"] == 0
    assert results[0]["after_overflow_state"] == results[1]["after_overflow_state"]


def test_both_ranks_report_the_same_skipped_step_from_an_overflow_on_one_rank(results: list[dict[str, Any]]) -> None:
    rank0, rank1 = results

    assert rank0["telemetry"] == rank1["telemetry"]
    assert rank0["telemetry"]["skipped_steps"] == 1
    assert rank0["telemetry"]["last_overflow_step"] == ddp_worker.STEPS
