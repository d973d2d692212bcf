"""``mixprec.tune`` at its edges: odd models, odd arguments, threads, and what it leaves as it was."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch

import mixprec
import mixprec._tune_cache
from mixprec import PrecisionError

#: Small enough to be quick; a budget that never cuts these tiny models.
QUICK: dict[str, Any] = {"device": "cpu", "steps": 4, "budget_s": 60.0, "refresh": True}


@pytest.fixture(autouse=True)
def cache_dir(_isolated_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own tune cache."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(directory))
    return directory / "tune"


def dropout_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5))


def test_every_precision_draws_the_same_dropout_masks_as_fp32() -> None:
    # 64-true computes what 32-true does, to float32's rounding: only different masks could move its loss.
    result = mixprec.tune(dropout_model(), torch.randn(4, 8), candidates=["64-true"], **QUICK)
    double = next(m for m in result.measurements if m.precision == "64-true")
    assert double.drift is not None
    assert double.drift < 1e-4


def test_the_largest_float_budget_is_measured_in_full() -> None:
    result = mixprec.tune(torch.nn.Linear(4, 4), torch.randn(2, 4), **{**QUICK, "budget_s": 1e308})
    assert all(m.steps == QUICK["steps"] for m in result.measurements)


def test_a_budget_beyond_any_float_is_a_precision_error() -> None:
    with pytest.raises(PrecisionError, match=r"budget_s=.* out of range"):
        mixprec.tune(torch.nn.Linear(4, 4), torch.randn(2, 4), **{**QUICK, "budget_s": 10**400})


def test_more_steps_than_a_float_holds_is_a_precision_error() -> None:
    with pytest.raises(PrecisionError, match=r"steps=.* out of range"):
        mixprec.tune(torch.nn.Linear(4, 4), torch.randn(2, 4), **{**QUICK, "steps": 10**400})


def test_a_model_on_the_meta_device_is_an_error_that_says_to_materialise_it() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(4, 4)
    with pytest.raises(PrecisionError, match="to_empty"):
        mixprec.tune(model, torch.randn(2, 4), **QUICK)


@pytest.mark.parametrize(
    "model",
    [torch.nn.ReLU(), torch.nn.Linear(4, 4).requires_grad_(False)],
    ids=["no parameters", "frozen parameters"],
)
def test_a_model_with_nothing_to_train_is_an_error_that_says_so(model: torch.nn.Module) -> None:
    with pytest.raises(PrecisionError, match="no parameter that requires grad"):
        mixprec.tune(model, torch.randn(2, 4), **QUICK)


def test_a_partly_frozen_model_is_measured() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4).requires_grad_(False), torch.nn.Linear(4, 4))
    result = mixprec.tune(model, torch.randn(2, 4), **QUICK)
    assert result.precision in {m.precision for m in result.measurements}


def test_an_optimizer_whose_step_needs_a_closure_is_an_error_that_says_what_to_pass() -> None:
    model = torch.nn.Linear(4, 4)
    with pytest.raises(PrecisionError, match=r"LBFGS\.step needs a closure.*optimizer=None"):
        mixprec.tune(model, torch.randn(2, 4), optimizer=torch.optim.LBFGS(model.parameters()), **QUICK)


def test_two_threads_tuning_at_once_each_measure_as_alone_and_leave_the_random_state() -> None:
    torch.manual_seed(1)
    models = [dropout_model_unseeded() for _ in range(2)]
    before = torch.get_rng_state()
    results: list[mixprec.TuneResult] = []
    errors: list[BaseException] = []

    def run(model: torch.nn.Module) -> None:
        try:
            results.append(mixprec.tune(model, torch.ones(4, 8), candidates=["64-true"], **QUICK))
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    drifts = [m.drift for r in results for m in r.measurements if m.precision == "64-true"]
    assert len(drifts) == 2
    assert all(d is not None and d < 1e-4 for d in drifts)
    assert torch.equal(torch.get_rng_state(), before)


def dropout_model_unseeded() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 8))


def test_another_loss_function_of_the_same_name_is_measured_anew() -> None:
    model, example = torch.nn.Linear(4, 4), torch.randn(2, 4)
    settings = {**QUICK, "refresh": None}
    first = mixprec.tune(model, example, loss_fn=lambda output: output.abs().mean(), **settings)
    second = mixprec.tune(model, example, loss_fn=lambda output: output.pow(2).mean(), **settings)
    assert not first.cached
    assert not second.cached
    assert mixprec.tune(model, example, loss_fn=lambda output: output.pow(2).mean(), **settings).cached


@pytest.mark.parametrize(
    "content", ["[" * 100_000, '{"format": 1, "result": ' + "9" * 5000 + "}"], ids=["deep", "long int"]
)
def test_a_cache_file_python_cannot_parse_warns_and_is_measured_again(cache_dir: Path, content: str) -> None:
    model, example = torch.nn.Linear(4, 4), torch.randn(2, 4)
    first = mixprec.tune(model, example, **{**QUICK, "refresh": None})
    (cache_dir / f"{first.key}.json").write_text(content)

    with pytest.warns(mixprec.PrecisionWarning, match="measured again"):
        result = mixprec.tune(model, example, **{**QUICK, "refresh": None})

    assert not result.cached


@pytest.mark.parametrize("choice", [5, "bf17-mixed", "64-true"])
def test_a_cached_choice_that_is_none_of_its_measurements_warns_and_is_measured_again(
    cache_dir: Path, choice: object
) -> None:
    model, example = torch.nn.Linear(4, 4), torch.randn(2, 4)
    first = mixprec.tune(model, example, **{**QUICK, "refresh": None})
    path = cache_dir / f"{first.key}.json"
    stored = json.loads(path.read_text())
    stored["result"]["precision"] = choice
    path.write_text(json.dumps(stored))

    with pytest.warns(mixprec.PrecisionWarning, match="measured again"):
        result = mixprec.tune(model, example, **{**QUICK, "refresh": None})

    assert not result.cached
    assert result.precision in {m.precision for m in result.measurements}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"refresh": "no"}, "refresh must be True, False or None"), ({"progress": 0.5}, "progress must be a function")],
)
def test_a_refresh_or_progress_of_the_wrong_type_is_a_type_error_before_measuring(
    arguments: dict[str, Any], message: str
) -> None:
    model = CountingLinear()
    with pytest.raises(TypeError, match=message):
        mixprec.tune(model, torch.randn(2, 4), **{**QUICK, **arguments})
    assert model.calls == 0


class CountingLinear(torch.nn.Linear):
    """A linear layer that counts the forward passes of its copies, on the class."""

    calls = 0

    def __init__(self) -> None:
        super().__init__(4, 4)
        type(self).calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)


def test_a_cpuinfo_with_bytes_that_are_not_utf8_is_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / "cpuinfo"
    odd.write_bytes(b"processor\t: 0\nmodel name\t: Vendor \xff\xfe CPU\nflags\t\t: fpu avx2\n")
    monkeypatch.setattr(mixprec._tune_cache, "CPUINFO", odd)

    result = mixprec.tune(torch.nn.Linear(4, 4), torch.randn(2, 4), **QUICK)

    assert result.precision in {m.precision for m in result.measurements}


class PythonRandomScale(torch.nn.Module):
    """A linear layer whose output is scaled by a draw from Python's and NumPy's generators."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x) * (random.random() + float(numpy.random.rand()))
        return out


def test_every_precision_draws_the_same_python_and_numpy_random_numbers_as_fp32() -> None:
    result = mixprec.tune(PythonRandomScale(), torch.randn(2, 4), candidates=["64-true"], **QUICK)
    double = next(m for m in result.measurements if m.precision == "64-true")
    assert double.drift is not None
    assert double.drift < 1e-4


def test_numpy_scalars_are_numbers_for_budget_steps_and_drift() -> None:
    result = mixprec.tune(
        torch.nn.Linear(4, 4),
        torch.randn(2, 4),
        **{**QUICK, "steps": numpy.int64(4), "budget_s": numpy.float32(60.0), "max_drift": numpy.float64(0.1)},
    )
    assert (result.steps, result.budget_s, result.max_drift) == (4, 60.0, pytest.approx(0.1))
