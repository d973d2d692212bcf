"""``mixprec bench``: a transformer block's training step timed in each usable precision: table, JSON, plot."""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mixprec
from mixprec._registry import registry
from mixprec.bench import Result, noise_note
from tests.cli_runs import Ran, run_cli

pytestmark = pytest.mark.slow

TINY = ["--device", "cpu", "--dim", "16", "--seq", "4", "--batch", "2", "--rounds", "2"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ran, dict[str, Any]]]:
    """One tiny benchmark run for the module: what it printed and the JSON it wrote."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MIXPREC_")]:
            patch.delenv(name)
        registry.reset()
        ran = run_cli(["bench", *TINY, "--json", str(path)])
        assert ran.code == 0, ran.err
        yield ran, json.loads(path.read_text())
        registry.reset()


def test_bench_times_every_usable_precision_of_the_device(bench: tuple[Ran, dict[str, Any]]) -> None:
    _, payload = bench
    usable = {r.precision for r in mixprec.available("cpu") if r.precision and r.status in ("available", "slow")}
    assert {r["precision"] for r in payload["results"]} == usable


def test_bench_times_each_precision_in_every_round(bench: tuple[Ran, dict[str, Any]]) -> None:
    _, payload = bench
    for result in payload["results"]:
        assert len(result["round_ms"]) == 2
        assert all(t > 0 for t in result["round_ms"])
        assert result["step_ms"] == pytest.approx(statistics.median(result["round_ms"]))


def test_bench_speed_is_the_median_of_per_round_ratios_to_fp32(bench: tuple[Ran, dict[str, Any]]) -> None:
    _, payload = bench
    fp32 = next(r for r in payload["results"] if r["precision"] == "32-true")
    for result in payload["results"]:
        ratios = [a / b for a, b in zip(fp32["round_ms"], result["round_ms"], strict=True)]
        assert result["speedup"] == pytest.approx(statistics.median(ratios))


def test_bench_json_records_the_workload_and_the_environment(bench: tuple[Ran, dict[str, Any]]) -> None:
    _, payload = bench
    assert payload["workload"] == {
        "description": "a transformer block (dim 16, 1 head, sequence 4, batch 2)",
        "dim": 16,
        "heads": 1,
        "seq": 4,
        "batch": 2,
    }
    assert payload["rounds"] == 2
    assert payload["environment"]["mixprec"] == mixprec.__version__
    assert {"torch", "lightning", "date", "torch_threads"} <= payload["environment"].keys()


def test_bench_says_what_auto_is_worth_here(bench: tuple[Ran, dict[str, Any]]) -> None:
    ran, payload = bench
    auto = mixprec.explain("auto", "cpu").precision
    assert payload["auto"] == auto
    chosen = next(r for r in payload["results"] if r["auto"])
    assert chosen["precision"] == auto
    assert f"auto picks {auto!r}: {chosen['speedup']:.2f}x the speed of fp32 here" in ran.out


def test_bench_prints_a_row_per_precision_fastest_first(bench: tuple[Ran, dict[str, Any]]) -> None:
    ran, payload = bench
    rows = ran.out.split("VS FP32\n")[1].splitlines()
    for row, result in zip(rows, payload["results"], strict=False):
        assert f" {result['precision']} " in row
    speedups = [r["speedup"] for r in payload["results"]]
    assert speedups == sorted(speedups, reverse=True)


def test_bench_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    ran = run_cli(["bench", *TINY, "--rounds", "1", "--plot", str(path)])
    assert ran.code == 0, ran.err
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_bench_plot_without_matplotlib_says_what_to_install_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # Python's way of making a module unimportable
    ran = run_cli(["bench", *TINY, "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")])
    assert ran.code == 2
    assert "pip install 'mixprec[plot]'" in ran.err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("option", ["--rounds", "--dim", "--seq", "--batch"])
def test_bench_sizes_below_one_are_an_error(option: str) -> None:
    ran = run_cli(["bench", "--device", "cpu", option, "0"])
    assert ran.code == 2
    assert f"{option} must be at least 1" in ran.err


def _result(round_ms: tuple[float, ...]) -> Result:
    return Result("32-true", "core", "available", "", 5, 1.0, round_ms, 0.5, 1.0, False)


def test_rounds_that_vary_twofold_are_called_a_busy_machine() -> None:
    assert "varied up to 2.0x between rounds" in noise_note([_result((1.0, 1.1)), _result((1.0, 2.0, 1.5))])


def test_rounds_that_agree_need_no_note() -> None:
    assert noise_note([_result((1.0, 1.2, 1.1))]) == ""
