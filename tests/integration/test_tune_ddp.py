"""``mixprec.tune`` under a torch.distributed process group: rank 0 measures, every rank trains in its choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from lightning.fabric.plugins.environments.lightning import find_free_network_port

from tests.integration import tune_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of two gloo ranks on the CPU wrote after calling tune."""
    outdir = tmp_path_factory.mktemp("tune-ddp")
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(find_free_network_port())}
    processes = [
        subprocess.Popen(
            [sys.executable, tune_worker.__file__, str(outdir)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-4000:]
    return [json.loads((outdir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_every_rank_gets_rank_zeros_choice(ranks: list[dict[str, Any]]) -> None:
    rank0, rank1 = ranks

    assert (rank1["precision"], rank1["backend"]) == (rank0["precision"], rank0["backend"])
    assert rank1["measurements"] == rank0["measurements"]
    assert rank1["object"] == rank0["object"]


def test_only_rank_zero_measures(ranks: list[dict[str, Any]]) -> None:
    rank0, rank1 = ranks

    assert rank0["calls"] > 0
    assert rank1["calls"] == 0


def test_each_rank_builds_for_its_own_device(ranks: list[dict[str, Any]]) -> None:
    assert [rank["device"] for rank in ranks] == ["cpu", "cpu"]


def test_an_error_on_rank_zero_reaches_every_rank(ranks: list[dict[str, Any]]) -> None:
    rank0, rank1 = ranks

    assert "not finite in fp32 either" in rank0["error"]
    assert rank1["error"].startswith("tune failed on rank 0, so no rank can choose a precision: PrecisionError: ")
