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
from hypothesis import given
from hypothesis import strategies as st

import mixprec
from mixprec._registry import registry
from mixprec.bench import Result, heads_for, noise_note, transformer_block
from tests.cli_runs import Ran, run_cli

pytestmark = pytest.mark.slow

TINY = ["--device", "cpu", "--dim", "16", "--seq", "4", "--batch", "2", "--rounds", "2"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ran, dict[str, Any]]]:
    """Two tiny benchmark runs for the module: the text it printed, and the JSON it wrote with ``--json -o``."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MIXPREC_")]:
            patch.delenv(name)
        registry.reset()
        text = run_cli(["bench", *TINY])
        assert text.code == 0, text.err
        written = run_cli(["bench", *TINY, "--json", "-o", str(path)])
        assert (written.code, written.out) == (0, ""), written.err
        yield text, json.loads(path.read_text())
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


def _table(out: str) -> list[list[str]]:
    """The rows of the printed table, split into columns, the "->" of auto's row kept as a column of its own."""
    rows = []
    for row in out.split("VS FP32\n")[1].splitlines():
        if row.startswith(("auto picks", "not run here:")):
            break
        rows.append(row.split() if row.startswith("->") else ["", *row.split()])
    return rows


def test_bench_says_what_auto_is_worth_here(bench: tuple[Ran, dict[str, Any]]) -> None:
    ran, payload = bench
    auto = mixprec.explain("auto", "cpu").precision
    assert payload["auto"] == auto
    assert next(r for r in payload["results"] if r["auto"])["precision"] == auto
    marked = next(row for row in _table(ran.out) if row[0] == "->")
    assert marked[1] == auto
    assert f"\nauto picks {auto!r}: {marked[-1]} the speed of fp32 here" in ran.out


def test_bench_prints_a_row_per_precision_fastest_first(bench: tuple[Ran, dict[str, Any]]) -> None:
    ran, payload = bench
    rows = _table(ran.out)
    assert sorted(row[1] for row in rows) == sorted(r["precision"] for r in payload["results"])
    speedups = [float(row[-1].rstrip("x")) for row in rows]
    assert speedups == sorted(speedups, reverse=True)
    assert [r["speedup"] for r in payload["results"]] == sorted(
        (r["speedup"] for r in payload["results"]), reverse=True
    )


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
    ran = run_cli(["bench", *TINY, "--json", "-o", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")])
    assert ran.code == 2
    assert "pip install 'mixprec[plot]'" in ran.err
    assert list(tmp_path.iterdir()) == []


def test_bench_json_prints_only_json_on_stdout(tmp_path: Path) -> None:
    ran = run_cli(["bench", *TINY, "--rounds", "1", "--json"])
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["rounds"] == 1


def test_bench_output_to_a_directory_that_does_not_exist_fails_before_measuring(tmp_path: Path) -> None:
    ran = run_cli(["bench", *TINY, "--json", "-o", str(tmp_path / "no" / "such" / "x.json")])
    assert ran.code == 2
    assert "mixprec: error: -o " in ran.err
    assert "No such file or directory" in ran.err
    assert "timing" not in ran.err
    assert not (tmp_path / "no").exists()


def test_bench_plot_into_a_directory_that_does_not_exist_fails_before_measuring(tmp_path: Path) -> None:
    ran = run_cli(["bench", *TINY, "--plot", str(tmp_path / "no" / "b.png")])
    assert ran.code == 2
    assert "mixprec: error: --plot " in ran.err
    assert "timing" not in ran.err


@pytest.mark.parametrize("device", ["cpu:1", "cpu:99", "xpu"])
def test_bench_on_a_device_that_is_not_here_fails_before_measuring(device: str) -> None:
    ran = run_cli(["bench", "--device", device])
    assert ran.code == 2
    assert ran.err.startswith(f"mixprec: error: --device {device}: ")
    assert "does not exist" in ran.err or "no xpu device here" in ran.err
    assert "Traceback" not in ran.err
    assert (ran.out, "timing" in ran.err) == ("", False)


@pytest.mark.parametrize("device", ["CPU", "cpu:", "cpu:-1", "nosuchdevice"])
def test_bench_on_a_malformed_or_unknown_device_is_an_error(device: str) -> None:
    ran = run_cli(["bench", "--device", device])
    assert ran.code == 2
    assert ran.err.startswith("mixprec: error: ")
    assert ran.out == ""


@pytest.mark.parametrize("option", ["--rounds", "--dim", "--seq", "--batch"])
def test_bench_sizes_below_one_are_an_error(option: str) -> None:
    ran = run_cli(["bench", "--device", "cpu", option, "0"])
    assert ran.code == 2
    assert f"{option} must be at least 1" in ran.err


@pytest.mark.parametrize(
    "sizes", [["--dim", "2000000"], ["--seq", "10000000", "--batch", "4096"], ["--dim", "10" * 30]]
)
def test_bench_sizes_beyond_any_memory_are_an_error_before_measuring(sizes: list[str]) -> None:
    ran = run_cli(["bench", "--device", "cpu", *sizes])
    assert ran.code == 2
    assert "beyond any device's memory; use smaller sizes" in ran.err
    assert "timing" not in ran.err


@given(st.integers(min_value=1, max_value=2**17))
def test_a_blocks_heads_divide_its_width(dim: int) -> None:
    heads = heads_for(dim)
    assert dim % heads == 0
    assert heads <= max(1, dim // 64)


@pytest.mark.parametrize(("dim", "heads"), [(129, 1), (200, 2), (256, 4), (1000, 10)])
def test_a_block_of_any_width_builds(dim: int, heads: int) -> None:
    workload = transformer_block(dim, 4, 2)
    assert workload.settings["heads"] == heads
    workload.model()


def _result(round_ms: tuple[float, ...]) -> Result:
    return Result("32-true", "core", "available", "", 5, 1.0, round_ms, 0.5, 1.0, False)


def test_rounds_that_vary_twofold_are_called_a_busy_machine() -> None:
    assert "varied up to 2.0x between rounds" in noise_note([_result((1.0, 1.1)), _result((1.0, 2.0, 1.5))])


def test_rounds_that_agree_need_no_note() -> None:
    assert noise_note([_result((1.0, 1.2, 1.1))]) == ""
