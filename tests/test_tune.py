"""``mixprec.tune``: measure the caller's own model in each candidate precision and choose the fastest safe one."""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.fabric.plugins.precision import Precision
from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

import mixprec
from mixprec import Device, Measurement, PrecisionError, PrecisionWarning, TuneResult, UnknownPrecisionError
from mixprec._tune import _choose
from tests.distributions import Site

#: Small enough to be quick, large enough that every candidate runs its rounds.
QUICK: dict[str, Any] = {"device": "cpu", "steps": 6, "budget_s": 60.0}


class Counting(torch.nn.Module):
    """A small MLP that counts the forward passes of every copy of it (the count is on the class)."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        out: torch.Tensor = self.net(x)
        return out


@pytest.fixture(autouse=True)
def cache_dir(_isolated_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own tune cache."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(directory))
    return directory / "tune"


@pytest.fixture
def counting() -> Iterator[Counting]:
    torch.manual_seed(0)
    Counting.calls = 0
    yield Counting()
    Counting.calls = 0


EXAMPLE = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))


# --- the choice follows the measurement ---------------------------------------------------------------

SPINNING_BACKEND = {
    "spinning": """
        import mixprec

        @mixprec.hookimpl
        def mixprec_backends():
            return [mixprec.Backend("spinning", "cpu", tuple(SPIN), policy="spinning.policy", priority=100)]

        SPIN = {spin}
    """,
    "spinning.policy": """
        import contextlib
        import time

        import mixprec
        from spinning import SPIN


        def availability(precision, device):
            return mixprec.Availability.available()


        def device_count():
            return 1


        def create(request):
            from lightning.fabric.plugins.precision import Precision

            class Spinning(Precision):
                # fp32 arithmetic, burning SPIN[precision] seconds of CPU time in every forward pass.
                @contextlib.contextmanager
                def forward_context(self):
                    end = time.process_time() + SPIN[request.precision]
                    while time.process_time() < end:
                        pass
                    yield

            return Spinning()
    """,
}


def install_spinning(site: Site, spin: dict[str, float]) -> None:
    """A backend serving the precisions of ``spin`` on the CPU, first, each spending that many seconds a forward."""
    modules = dict(SPINNING_BACKEND)
    modules["spinning"] = modules["spinning"].format(spin=spin)
    site.install("mixprec-spinning", entry_points={"spinning": "spinning"}, modules=modules)


def test_a_precision_slower_than_fp32_on_the_model_is_not_chosen(site: Site, counting: Counting) -> None:
    install_spinning(site, {"bf16-mixed": 0.002})

    result = mixprec.tune(counting, EXAMPLE, candidates=["bf16-mixed"], **QUICK)

    slow = next(m for m in result.measurements if m.precision == "bf16-mixed")
    assert slow.backend == "spinning"
    assert slow.speedup < 1.0
    assert result.precision == "32-true"
    assert "bf16-mixed ran at" in result.reason


def test_a_precision_faster_than_fp32_on_the_model_is_chosen(site: Site, counting: Counting) -> None:
    install_spinning(site, {"32-true": 0.004, "16-mixed": 0.002, "bf16-mixed": 0.0})

    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    fast = next(m for m in result.measurements if m.precision == "bf16-mixed")
    assert (fast.backend, fast.safe) == ("spinning", True)
    assert fast.speedup > mixprec._tune.MIN_GAIN
    assert (result.precision, result.backend) == ("bf16-mixed", "spinning")
    assert result.reason.startswith("'bf16-mixed' is the fastest safe precision measured on cpu")


def measured(precision: str, speedup: float, round_ms: tuple[float, ...], safe: bool = True) -> Measurement:
    return Measurement(precision, "core", "available", 5, 1.0, round_ms, speedup, None, True, 0.0, 1.0, safe)


def test_a_precision_faster_only_by_the_median_of_disturbed_rounds_is_not_chosen() -> None:
    fp32 = measured("32-true", 1.0, (1.0, 3.0, 3.0))
    noisy = measured("bf16-mixed", 1.5, (1.2, 2.0, 2.0))  # its fastest round is slower than fp32's fastest

    chosen, reason = _choose([fp32, noisy], Device("cpu"))

    assert chosen is fp32
    assert "bf16-mixed ran at 1.50x fp32's speed, but its fastest round was not faster than fp32's" in reason


def test_the_fastest_clearly_faster_safe_precision_is_chosen() -> None:
    fp32 = measured("32-true", 1.0, (2.0, 2.0, 2.0))
    fast = measured("bf16-mixed", 2.0, (1.0, 1.0, 1.0))
    faster_but_unsafe = measured("16-mixed", 4.0, (0.5, 0.5, 0.5), safe=False)
    barely = measured("bf16-true", 1.01, (1.98, 1.98, 1.98))

    chosen, _ = _choose([fp32, fast, faster_but_unsafe, barely], Device("cpu"))

    assert chosen is fast


def test_the_result_holds_a_measurement_per_runnable_candidate(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    runnable = {"32-true"} | {p for p in mixprec.AUTO_ORDER if mixprec.explain(p, "cpu").error is None}
    assert {m.precision for m in result.measurements} == runnable
    for m in result.measurements:
        assert m.steps == QUICK["steps"]
        assert m.step_ms > 0
        assert all(t > 0 for t in m.round_ms)
        assert math.isfinite(m.final_loss)
    assert result.clock == ("thread CPU time" if torch.get_num_threads() == 1 else "wall time")


def test_speed_is_the_median_of_per_round_ratios_to_fp32(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    fp32 = next(m for m in result.measurements if m.precision == "32-true")
    assert (fp32.speedup, fp32.drift) == (1.0, 0.0)
    for m in result.measurements:
        ratios = [a / b for a, b in zip(fp32.round_ms, m.round_ms, strict=False)]
        assert m.speedup == pytest.approx(statistics.median(ratios))
        assert m.step_ms == pytest.approx(statistics.median(m.round_ms))


def test_true_half_precisions_and_fp8_are_measured_only_when_listed(counting: Counting) -> None:
    default = mixprec.tune(counting, EXAMPLE, **QUICK)
    listed = mixprec.tune(counting, EXAMPLE, candidates=["bf16-true"], **QUICK)

    assert {m.precision for m in default.measurements}.isdisjoint({"16-true", "bf16-true", "fp8-mixed"})
    assert {m.precision for m in listed.measurements} == {"32-true", "bf16-true"}


def test_a_candidate_no_backend_can_run_here_is_not_measured_and_says_why(site: Site, counting: Counting) -> None:
    site.install(
        "mixprec-elsewhere",
        entry_points={"elsewhere": "elsewhere"},
        modules={
            "elsewhere": """
                import mixprec

                @mixprec.hookimpl
                def mixprec_backends():
                    return [mixprec.Backend("elsewhere", "cpu", ("13-odd",), policy="elsewhere.policy")]
            """,
            "elsewhere.policy": """
                import mixprec

                def availability(precision, device):
                    return mixprec.Availability.unavailable("needs the odd unit this CPU lacks")

                def device_count():
                    return 1

                def create(request):
                    raise AssertionError("never built")
            """,
        },
    )

    result = mixprec.tune(counting, EXAMPLE, candidates=["13-odd"], **QUICK)

    assert "needs the odd unit this CPU lacks" in dict(result.not_measured)["13-odd"]
    assert {m.precision for m in result.measurements} == {"32-true"}


# --- unsafe numbers are refused ----------------------------------------------------------------------


def overflowing_fp16() -> tuple[torch.nn.Module, torch.Tensor, torch.optim.Optimizer]:
    """A layer whose outputs (4e5) are beyond float16's largest value (65504) but fine in fp32 and bf16."""
    layer = torch.nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.fill_(1e4)
        layer.bias.zero_()
    return layer, torch.full((2, 4), 10.0), torch.optim.SGD(layer.parameters(), lr=0.0)


def test_a_precision_whose_loss_goes_non_finite_is_refused_with_the_reason() -> None:
    model, example, optimizer = overflowing_fp16()

    result = mixprec.tune(model, example, optimizer=optimizer, candidates=["16-mixed", "bf16-mixed"], **QUICK)

    fp16 = next(m for m in result.measurements if m.precision == "16-mixed")
    assert (fp16.finite, fp16.safe) == (False, False)
    assert fp16.note.startswith("refused: the loss became inf at step 1")
    assert result.precision != "16-mixed"
    assert "16-mixed was refused: the loss became inf" in result.reason


def test_a_precision_whose_loss_drifts_beyond_the_bound_is_refused(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, candidates=["bf16-true"], max_drift=1e-9, **QUICK)

    bf16 = next(m for m in result.measurements if m.precision == "bf16-true")
    assert bf16.drift is not None
    assert bf16.drift > 1e-9
    assert not bf16.safe
    assert "drifted" in bf16.note
    assert result.precision == "32-true"


def test_a_loss_that_is_not_finite_in_fp32_is_an_error() -> None:
    model = torch.nn.Linear(4, 1)
    with pytest.raises(PrecisionError, match="not finite in fp32 either"):
        mixprec.tune(model, torch.full((2, 4), math.inf), **QUICK)


# --- the caller's objects are untouched ---------------------------------------------------------------


def test_the_callers_model_optimizer_and_random_states_are_unchanged() -> None:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    model(EXAMPLE).sum().backward()
    optimizer.step()  # the optimizer has state now
    random.seed(5)
    numpy.random.seed(6)
    before = (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
        torch.get_rng_state(),
        random.getstate(),
        numpy.random.get_state(),
        [p.grad.clone() for p in model.parameters() if p.grad is not None],
    )

    mixprec.tune(model, EXAMPLE, optimizer=optimizer, **QUICK)

    after_model, after_optimizer = model.state_dict(), optimizer.state_dict()
    assert after_model.keys() == before[0].keys()
    assert all(torch.equal(after_model[k], before[0][k]) for k in after_model)
    assert repr(after_optimizer) == repr(before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    assert random.getstate() == before[3]
    state = numpy.random.get_state()
    assert state[0] == before[4][0]
    assert (state[1] == before[4][1]).all()
    assert state[2:] == before[4][2:]
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before[5], strict=True))


def test_every_precision_trains_with_the_callers_optimizer_settings(counting: Counting) -> None:
    # lr=0 in the caller's optimizer: no copy may learn, so every loss stays where it started.
    optimizer = torch.optim.SGD(counting.parameters(), lr=0.0, momentum=0.9)

    result = mixprec.tune(counting, EXAMPLE, optimizer=optimizer, **QUICK)

    start = counting(EXAMPLE).pow(2).mean().item()
    fp32 = next(m for m in result.measurements if m.precision == "32-true")
    assert fp32.final_loss == pytest.approx(start, rel=1e-6)


# --- the cache ----------------------------------------------------------------------------------------


def test_a_second_call_reads_the_cache_and_trains_nothing(counting: Counting, cache_dir: Path) -> None:
    first = mixprec.tune(counting, EXAMPLE, **QUICK)
    assert Counting.calls > 0
    assert not first.cached
    Counting.calls = 0

    second = mixprec.tune(counting, EXAMPLE, **QUICK)

    assert Counting.calls == 0
    assert second.cached
    assert second.seconds == 0.0
    assert (second.precision, second.measurements) == (first.precision, first.measurements)
    assert [p.name for p in cache_dir.iterdir()] == [f"{first.key}.json"]


def test_refresh_measures_again(counting: Counting) -> None:
    mixprec.tune(counting, EXAMPLE, **QUICK)
    Counting.calls = 0

    again = mixprec.tune(counting, EXAMPLE, refresh=True, **QUICK)

    assert Counting.calls > 0
    assert not again.cached


def test_the_refresh_variable_measures_again(counting: Counting, monkeypatch: pytest.MonkeyPatch) -> None:
    mixprec.tune(counting, EXAMPLE, **QUICK)
    Counting.calls = 0
    monkeypatch.setenv("MIXPREC_TUNE_REFRESH", "yes")

    assert not mixprec.tune(counting, EXAMPLE, **QUICK).cached
    assert Counting.calls > 0


def test_a_malformed_refresh_variable_is_an_error(counting: Counting, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPREC_TUNE_REFRESH", "maybe")
    with pytest.raises(PrecisionError, match="MIXPREC_TUNE_REFRESH='maybe' is not a boolean"):
        mixprec.tune(counting, EXAMPLE, **QUICK)


def test_another_example_shape_is_measured_anew(counting: Counting) -> None:
    first = mixprec.tune(counting, EXAMPLE, **QUICK)
    Counting.calls = 0

    other = mixprec.tune(counting, torch.randn(8, 8), **QUICK)

    assert Counting.calls > 0
    assert other.key != first.key


@pytest.mark.parametrize("content", ["{not json", '{"format": 1}', '{"format": 1, "result": {"precision": 1}}', "[]"])
def test_a_corrupt_cache_file_warns_and_is_measured_again(counting: Counting, cache_dir: Path, content: str) -> None:
    first = mixprec.tune(counting, EXAMPLE, **QUICK)
    path = cache_dir / f"{first.key}.json"
    path.write_text(content)
    Counting.calls = 0

    with pytest.warns(PrecisionWarning, match="measured again"):
        result = mixprec.tune(counting, EXAMPLE, **QUICK)

    assert Counting.calls > 0
    assert not result.cached
    assert json.loads(path.read_text())["result"]["precision"] == result.precision


def test_a_cache_directory_that_cannot_be_written_warns(
    counting: Counting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(blocker))

    with pytest.warns(PrecisionWarning, match="could not store"):
        result = mixprec.tune(counting, EXAMPLE, **QUICK)

    assert result.precision == "32-true" or result.precision in mixprec.AUTO_ORDER


def test_a_cache_file_that_cannot_be_replaced_warns_and_leaves_no_temporary_file(
    counting: Counting, cache_dir: Path
) -> None:
    first = mixprec.tune(counting, EXAMPLE, **QUICK)
    path = cache_dir / f"{first.key}.json"
    path.unlink()
    path.mkdir()  # os.replace cannot put a file where a directory is

    with pytest.warns(PrecisionWarning, match="could not store"):
        mixprec.tune(counting, EXAMPLE, refresh=True, **QUICK)

    assert [p.name for p in cache_dir.iterdir()] == [path.name]


def test_without_mixprec_cache_dir_the_cache_is_under_xdg_cache_home(
    counting: Counting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIXPREC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    assert (tmp_path / "xdg" / "mixprec" / "tune" / f"{result.key}.json").is_file()


def test_several_ranks_without_a_process_group_is_a_warning(
    counting: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")

    with pytest.warns(PrecisionWarning, match="WORLD_SIZE=2 but no torch.distributed process group"):
        mixprec.tune(counting, EXAMPLE, **QUICK)


# --- the result and its object ------------------------------------------------------------------------


def test_the_result_builds_the_chosen_precision_for_fabric(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    obj = result.precision_object()

    assert isinstance(obj, Precision)
    assert obj.mixprec_backend == result.backend


def test_the_result_builds_the_chosen_precision_for_the_trainer(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, target="trainer", **QUICK)

    assert isinstance(result.precision_object(), TrainerPrecision)


def test_the_result_round_trips_through_json(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    assert TuneResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_the_table_marks_the_choice(counting: Counting) -> None:
    result = mixprec.tune(counting, EXAMPLE, **QUICK)

    row = next(line for line in result.table().splitlines() if line.startswith("->"))
    assert f" {result.precision} " in row


# --- the budget ---------------------------------------------------------------------------------------


def test_a_budget_too_small_cuts_the_candidates_and_says_so() -> None:
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])

    result = mixprec.tune(model, torch.randn(256, 256), device="cpu", steps=50, budget_s=1e-3)

    assert [m.precision for m in result.measurements] == ["32-true"]
    assert result.measurements[0].steps == 3
    assert any("was not measured: the 0.001 s budget ran out" in line for line in result.cut)
    assert any(p == "bf16-mixed" and "budget" in why for p, why in result.not_measured)


def test_a_candidate_whose_first_step_alone_would_pass_the_budget_is_not_measured(
    site: Site, counting: Counting
) -> None:
    install_spinning(site, {"bf16-mixed": 1.0})

    result = mixprec.tune(counting, EXAMPLE, device="cpu", candidates=["bf16-mixed"], steps=50, budget_s=1.5)

    assert [m.precision for m in result.measurements] == ["32-true"]
    assert dict(result.not_measured)["bf16-mixed"].startswith("not measured: its first step took")
    assert any(line.startswith("bf16-mixed was not measured: its first step took") for line in result.cut)


def test_progress_is_reported_up_to_the_end(counting: Counting) -> None:
    seen: list[float] = []

    mixprec.tune(counting, EXAMPLE, progress=seen.append, **QUICK)

    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in seen)


# --- get_precision("auto", model=..., example=...) -----------------------------------------------------


def test_auto_with_a_model_is_tunes_choice(counting: Counting) -> None:
    obj = mixprec.get_precision("auto", "cpu", model=counting, example=EXAMPLE)

    result = mixprec.tune(counting, EXAMPLE, device="cpu")
    assert result.cached
    assert (obj.precision, obj.mixprec_backend) == (
        mixprec.get_precision(result.precision, "cpu", backend=result.backend).precision,
        result.backend,
    )


def test_auto_without_a_model_stays_the_static_answer(counting: Counting) -> None:
    static = mixprec.get_precision("auto", "cpu")

    assert static.precision == mixprec.explain("auto", "cpu").precision
    assert Counting.calls == 0


def test_a_model_for_a_named_precision_is_an_error(counting: Counting) -> None:
    with pytest.raises(PrecisionError, match="for precision 'auto' only"):
        mixprec.get_precision("bf16-mixed", "cpu", model=counting, example=EXAMPLE)


def test_a_model_without_an_example_is_an_error(counting: Counting) -> None:
    with pytest.raises(PrecisionError, match="pass example="):
        mixprec.get_precision("auto", "cpu", model=counting)


def test_auto_with_a_model_and_a_backend_is_an_error(counting: Counting) -> None:
    with pytest.raises(PrecisionError, match="backend= cannot be combined with model="):
        mixprec.get_precision("auto", "cpu", backend="cpu", model=counting, example=EXAMPLE)


# --- bad arguments ------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(max_value=2))
def test_fewer_than_three_steps_is_an_error(steps: int) -> None:
    with pytest.raises(PrecisionError, match=r"steps=.* out of range"):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(1, 2), device="cpu", steps=steps)


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan)))
def test_a_budget_that_is_not_a_positive_finite_number_is_an_error(budget: float) -> None:
    with pytest.raises(PrecisionError, match=r"budget_s=.* out of range"):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(1, 2), device="cpu", budget_s=budget)


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=12).filter(lambda s: s not in mixprec.ALIASES))
def test_an_unknown_candidate_is_an_error(name: str) -> None:
    known = {r.precision for r in mixprec.available()} | {"auto"}
    if name in known:
        return
    with pytest.raises(UnknownPrecisionError):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(1, 2), device="cpu", candidates=[name])


@pytest.mark.parametrize(
    ("candidates", "message"), [(["auto"], "'auto' cannot be a candidate"), ([], "candidates is empty")]
)
def test_auto_or_no_candidates_is_an_error(candidates: list[str], message: str) -> None:
    with pytest.raises(PrecisionError, match=message):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(1, 2), device="cpu", candidates=candidates)


def test_an_optimizer_over_other_parameters_is_an_error() -> None:
    model = torch.nn.Linear(2, 2)
    other = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(PrecisionError, match="parameter\\(s\\) that are not the model's"):
        mixprec.tune(model, torch.ones(1, 2), optimizer=other, **QUICK)


def test_a_loss_fn_that_returns_no_scalar_is_an_error() -> None:
    with pytest.raises(PrecisionError, match="loss_fn must return a scalar tensor"):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(3, 2), loss_fn=lambda out: out, **QUICK)


def test_a_device_that_is_not_here_is_an_error() -> None:
    with pytest.raises(PrecisionError, match="cpu:3 does not exist"):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(1, 2), device="cpu:3")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"model": "a model"}, "model must be a torch.nn.Module"),
        ({"optimizer": "adam"}, "optimizer must be a torch.optim.Optimizer"),
        ({"loss_fn": 3}, "loss_fn must be callable"),
        ({"candidates": "bf16-mixed"}, "candidates must be a list"),
        ({"steps": 4.0}, "steps must be an int"),
    ],
)
def test_an_argument_of_the_wrong_type_is_a_type_error(arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"model": torch.nn.Linear(2, 2), "example": torch.ones(1, 2), "device": "cpu", **arguments}
    with pytest.raises(TypeError, match=message):
        mixprec.tune(**call)


def test_a_model_that_fails_on_the_example_is_an_error_that_says_so() -> None:
    with pytest.raises(PrecisionError, match=r"failed in '32-true' \(RuntimeError: .*\): check that model\(example\)"):
        mixprec.tune(torch.nn.Linear(2, 2), torch.ones(1, 3), **QUICK)


def test_a_candidate_that_fails_to_train_is_not_measured_and_says_why(site: Site, counting: Counting) -> None:
    site.install(
        "mixprec-failing",
        entry_points={"failing": "failing"},
        modules={
            "failing": """
                import mixprec

                @mixprec.hookimpl
                def mixprec_backends():
                    return [mixprec.Backend("failing", "cpu", ("16-mixed",), policy="failing.policy", priority=200)]
            """,
            "failing.policy": """
                import mixprec

                def availability(precision, device):
                    return mixprec.Availability.available()

                def device_count():
                    return 1

                def create(request):
                    from lightning.fabric.plugins.precision import Precision

                    class Failing(Precision):
                        def convert_input(self, data):
                            raise RuntimeError("no kernel for this here")

                    return Failing()
            """,
        },
    )

    result = mixprec.tune(counting, EXAMPLE, candidates=["16-mixed"], **QUICK)

    assert "training failed (RuntimeError: no kernel for this here)" in dict(result.not_measured)["16-mixed"]
    assert result.precision == "32-true"


def test_no_example_is_an_error() -> None:
    with pytest.raises(PrecisionError, match="example is None"):
        mixprec.tune(torch.nn.Linear(2, 2), None)


def test_explain_says_auto_is_per_hardware_and_points_to_tune() -> None:
    rule = mixprec.explain("auto", "cpu").rule

    assert "per hardware, not per model" in rule
    assert "mixprec.tune(model, example)" in rule


def test_get_precisions_docstring_says_auto_is_per_hardware_and_points_to_tune() -> None:
    doc = " ".join((mixprec.get_precision.__doc__ or "").split())

    assert '"auto" answers per hardware, not per model' in doc
    assert ":func:`mixprec.tune`" in doc
