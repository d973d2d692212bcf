"""``mixprec demo``: the backends found, what "auto" picks, and every usable precision trained side by side."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import mixprec
from mixprec import demo
from mixprec._registry import registry
from tests.cli_runs import Ran, run_cli
from tests.distributions import Site

pytestmark = pytest.mark.slow

STEPS = ["--steps", "3"]


@pytest.fixture(scope="module")
def isolated_module() -> Iterator[None]:
    """The installed plugins, freshly discovered, with no MIXPREC_* variable set, for a whole module's run."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MIXPREC_")]:
            patch.delenv(name)
        registry.reset()
        yield
        registry.reset()


@pytest.fixture(scope="module")
def text(isolated_module: None) -> Ran:
    return run_cli(["demo", "--device", "cpu", *STEPS])


@pytest.fixture(scope="module")
def report(isolated_module: None) -> dict[str, Any]:
    ran = run_cli(["demo", "--device", "cpu", "--json", *STEPS])
    assert ran.code == 0, ran.err
    payload: dict[str, Any] = json.loads(ran.out)
    return payload


def _usable_precisions(device: str) -> set[str]:
    return {r.precision for r in mixprec.available(device) if r.precision and r.status in ("available", "slow")}


def test_demo_exits_zero(text: Ran) -> None:
    assert text.code == 0, text.err


def test_demo_lists_every_backend_found(text: Ran) -> None:
    backends = {r.backend for r in mixprec.available() if r.precision}
    section = text.out.split("What 'auto' picks")[0]
    for name in backends:
        assert f"\n  {name} " in section


def test_demo_explains_what_auto_picks(text: Ran) -> None:
    explanation = mixprec.explain("auto", "cpu")
    for line in str(explanation).splitlines():
        assert line in text.out


def test_demo_trains_every_usable_precision_of_the_device(report: dict[str, Any]) -> None:
    assert {r["precision"] for r in report["results"]} == _usable_precisions("cpu")


def test_demo_runs_each_precision_on_the_backend_get_precision_selects(report: dict[str, Any]) -> None:
    for result in report["results"]:
        assert result["backend"] == mixprec.explain(result["precision"], "cpu").backend


def test_demo_marks_only_autos_choice(report: dict[str, Any]) -> None:
    marked = [r["precision"] for r in report["results"] if r["auto"]]
    assert marked == [mixprec.explain("auto", "cpu").precision]
    assert report["auto"]["precision"] == marked[0]


def test_demo_trains_the_steps_asked_for(report: dict[str, Any]) -> None:
    assert {r["steps"] for r in report["results"]} == {3}


def test_demo_losses_and_times_are_measured(report: dict[str, Any]) -> None:
    for result in report["results"]:
        assert math.isfinite(result["loss"])
        assert result["round_ms"]
        assert all(t > 0 for t in result["round_ms"])
        assert result["step_ms"] == pytest.approx(statistics.median(result["round_ms"]))


def test_demo_speed_is_the_median_of_per_round_ratios_to_fp32(report: dict[str, Any]) -> None:
    fp32 = next(r for r in report["results"] if r["precision"] == "32-true")
    assert fp32["speedup"] == 1.0
    for result in report["results"]:
        ratios = [a / b for a, b in zip(fp32["round_ms"], result["round_ms"], strict=False)]
        assert result["speedup"] == pytest.approx(statistics.median(ratios))


def test_demo_table_has_a_row_per_precision_with_autos_marked(text: Ran) -> None:
    auto = mixprec.explain("auto", "cpu").precision
    rows = text.out.split("FINAL LOSS")[1].splitlines()
    for precision in _usable_precisions("cpu"):
        row = next(line for line in rows if f" {precision} " in line)
        assert row.startswith("->") == (precision == auto)


def test_demo_progress_bar_only_appends(text: Ran) -> None:
    assert "\r" not in text.err
    bar = next(line for line in text.err.splitlines() if line.startswith("training "))
    assert "[" + "#" * 40 + "]" in bar


def test_demo_json_holds_backends_auto_and_workload(report: dict[str, Any]) -> None:
    assert report["device"] == "cpu"
    assert {b["backend"] for b in report["backends"]} >= {"core"}
    assert report["auto"]["device"] == "cpu"
    assert report["workload"]["samples"] > 0


def test_fp32_and_autos_choice_train_the_same_steps_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "BUDGET_SECONDS", 0.2)
    ran = run_cli(["demo", "--device", "cpu", "--json", "--steps", "50"])
    steps = {r["precision"]: r["steps"] for r in json.loads(ran.out)["results"]}
    assert steps["32-true"] == steps[mixprec.explain("auto", "cpu").precision]


def test_over_the_time_budget_every_precision_trains_the_fewest_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "BUDGET_SECONDS", 0.0)
    ran = run_cli(["demo", "--device", "cpu", "--json", "--steps", "5"])
    assert {r["steps"] for r in json.loads(ran.out)["results"]} == {3}


def test_a_precision_that_trained_fewer_steps_is_named_under_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "BUDGET_SECONDS", 0.0)
    ran = run_cli(["demo", "--device", "cpu", "--steps", "5"])
    note = next(line for line in ran.out.splitlines() if "too slow here to train 5 steps" in line)
    assert set(note.split(":")[0].split(", ")) == _usable_precisions("cpu")


def test_a_slow_precision_is_trained_and_marked_slow(site: Site) -> None:
    site.install(
        "mixprec-slowpoke",
        entry_points={"slowpoke": "slowpoke"},
        modules={
            "slowpoke": """
                import mixprec

                @mixprec.hookimpl
                def mixprec_backends():
                    return [mixprec.Backend("slowpoke", "cpu", ("32-emulated",), policy="slowpoke.policy")]
            """,
            "slowpoke.policy": """
                import dataclasses
                import mixprec

                def availability(precision, device):
                    return mixprec.Availability.slow("emulated here")

                def device_count():
                    return 1

                def create(request):
                    from mixprec.precision import true_precision

                    return true_precision(dataclasses.replace(request, precision="32-true"))
            """,
        },
    )
    ran = run_cli(["demo", "--device", "cpu", "--json", *STEPS])
    row = next(r for r in json.loads(ran.out)["results"] if r["precision"] == "32-emulated")
    assert (row["backend"], row["status"], row["reason"]) == ("slowpoke", "slow", "emulated here")


def test_an_unknown_device_type_is_an_error() -> None:
    ran = run_cli(["demo", "--device", "nosuchdevice"])
    assert ran.code == 2
    assert "Unknown device type 'nosuchdevice'" in ran.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_type_this_machine_lacks_is_an_error_before_anything_runs() -> None:
    ran = run_cli(["demo", "--device", "cuda"])
    assert ran.code == 2
    assert ran.err.startswith("mixprec: error: --device cuda: ")
    assert "no cuda device here" in ran.err
    assert ran.out == ""


@pytest.mark.parametrize("device", ["cpu:1", "cpu:3"])
def test_a_device_index_this_machine_lacks_is_an_error_before_anything_runs(device: str) -> None:
    ran = run_cli(["demo", "--device", device])
    assert ran.code == 2
    assert ran.err.startswith(f"mixprec: error: --device {device}: ")
    assert f"{device} does not exist" in ran.err
    assert "Traceback" not in ran.err
    assert (ran.out, "training" in ran.err) == ("", False)


def test_the_cpu_by_its_index_trains_like_the_cpu() -> None:
    ran = run_cli(["demo", "--device", "cpu:0", "--json", *STEPS])
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["device"] == "cpu:0"


def test_fewer_than_three_steps_is_an_error() -> None:
    ran = run_cli(["demo", "--steps", "2"])
    assert ran.code == 2
    assert "--steps must be at least 3" in ran.err


@pytest.mark.parametrize(
    "argv", [["--help"], ["demo", "--help"], ["bench", "--help"], ["check", "--help"], ["new", "--help"]]
)
def test_help_imports_neither_torch_nor_lightning(argv: list[str]) -> None:
    code = (
        "import sys\nfrom mixprec import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


def test_demo_shows_what_tune_picks_beside_the_static_auto(text: Ran) -> None:
    line = next(line for line in text.out.splitlines() if line.startswith("mixprec.tune, measured on this model"))
    assert f"'auto' without a model answers {mixprec.explain('auto', 'cpu').precision!r}" in line


def test_demo_json_holds_tunes_measurement(report: dict[str, Any]) -> None:
    tuned = report["tune"]
    assert tuned["device"] == "cpu"
    assert tuned["precision"] in {m["precision"] for m in tuned["measurements"] if m["safe"]}


def test_demo_says_what_its_step_times_are_measured_with(text: Ran) -> None:
    assert "Step times: thread CPU time per step, median over the interleaved rounds." in text.out


def test_demo_leaves_the_torch_thread_count_as_it_was(text: Ran) -> None:
    before = torch.get_num_threads()
    run_cli(["demo", "--device", "cpu", "--json", *STEPS])
    assert torch.get_num_threads() == before


def test_no_precision_trains_more_steps_than_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "BUDGET_SECONDS", 0.2)
    ran = run_cli(["demo", "--device", "cpu", "--json", "--steps", "50"])
    steps = {r["precision"]: r["steps"] for r in json.loads(ran.out)["results"]}
    assert max(steps.values()) == steps["32-true"]


def test_demo_reports_the_skipped_steps_of_each_precision(report: dict[str, Any], text: Ran) -> None:
    for result in report["results"]:
        scaled = mixprec.STANDARD_CONTRACTS.get(result["precision"])
        if scaled is None or not scaled.loss_scaling:
            assert result["skipped_steps"] == 0, result["precision"]
        assert 0 <= result["skipped_steps"] <= result["steps"]
    assert "SKIPPED" in text.out.split("FINAL LOSS")[0].splitlines()[-1]
