"""Telemetry of the objects mixprec builds: counting steps and skipped steps, the options of collapse detection,
the "mixprec" entry of the state, and the overflow locator, through the objects' own methods (a plain loop)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import mixprec
from mixprec._telemetry import TELEMETRY_OPTIONS

pytestmark = pytest.mark.filterwarnings("ignore:.*is slow here:mixprec.PrecisionWarning")


class Amplify(nn.Module):
    """Multiplies its input by a factor: 1e6 overflows float16 (largest 65504) for any input of magnitude > 0.07."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def overflowing_model(factor: float = 1e6) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), Amplify(factor), nn.Linear(16, 1))


def train(precision: Any, model: nn.Module, overflows: list[bool]) -> None:
    """One step per entry, through the object's methods; True puts an inf into that step's input."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for overflow in overflows:
        inputs = torch.randn(4, 8, generator=generator)
        if overflow:
            inputs[0, 0] = math.inf
        optimizer.zero_grad()
        with precision.forward_context():
            loss = model(precision.convert_input(inputs)).float().pow(2).mean()
        precision.backward(loss, model)
        precision.optimizer_step(optimizer)


def fp16(**options: Any) -> Any:
    return mixprec.get_precision("16-mixed", "cpu", init_scale=1024.0, **options)


def test_a_fresh_object_reports_no_steps_and_its_initial_scale() -> None:
    assert fp16().telemetry == mixprec.Telemetry(scale=1024.0)


def test_a_precision_without_a_scaler_reports_no_scale_and_counts_steps() -> None:
    precision = mixprec.get_precision("32-true", "cpu")
    model = nn.Linear(8, 1)

    train(precision, nn.Sequential(model), [False, True, False])

    assert precision.telemetry == mixprec.Telemetry(steps=3)


def test_skipped_steps_are_counted_with_the_step_of_the_last_overflow_and_the_run_of_skips() -> None:
    precision = fp16()
    model = nn.Sequential(nn.Linear(8, 1))

    train(precision, model, [False, True, True])

    assert precision.telemetry == mixprec.Telemetry(
        steps=3, skipped_steps=2, consecutive_skips=2, last_step_skipped=True, last_overflow_step=2, scale=256.0
    )


def test_a_step_taken_after_skipped_ones_ends_the_run_of_skips() -> None:
    precision = fp16()
    model = nn.Sequential(nn.Linear(8, 1))

    train(precision, model, [True, True, False])

    telemetry = precision.telemetry
    assert (telemetry.consecutive_skips, telemetry.last_step_skipped, telemetry.skipped_steps) == (0, False, 2)
    assert telemetry.last_overflow_step == 1


def test_the_telemetry_is_a_snapshot_that_later_steps_do_not_change() -> None:
    precision = fp16()
    model = nn.Sequential(nn.Linear(8, 1))
    train(precision, model, [True])
    before = precision.telemetry

    train(precision, model, [False, True])

    assert before.steps == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.steps = 5  # type: ignore[misc]


def test_metrics_name_the_scale_and_the_step_counts_with_the_prefix() -> None:
    telemetry = mixprec.Telemetry(steps=4, skipped_steps=1, scale=512.0)

    assert telemetry.metrics("amp/") == {"amp/scale": 512.0, "amp/skipped_steps": 1.0, "amp/steps": 4.0}
    assert "precision/scale" not in mixprec.Telemetry(steps=1).metrics()


# --- collapse detection ---------------------------------------------------------------------------


def test_a_run_whose_forward_overflows_collapses_at_the_configured_number_of_skips() -> None:
    precision = fp16(collapse_after=3, on_collapse="raise")
    model = overflowing_model()

    with pytest.raises(mixprec.CollapseError, match=r"skipped the last 3 optimizer steps in a row \(steps 0 to 2\)"):
        train(precision, model, [False] * 10)

    assert precision.telemetry.steps == 3


def test_the_collapse_warning_says_the_likely_cause_and_what_to_do() -> None:
    precision = fp16(collapse_after=2)
    model = overflowing_model()

    with pytest.warns(mixprec.PrecisionWarning, match="collapsed") as caught:
        train(precision, model, [False] * 2)

    (message,) = [str(w.message) for w in caught if "collapsed" in str(w.message)]
    assert "inf or NaN in the forward pass" in message
    assert "locate_overflow" in message
    assert "'bf16-mixed'" in message


def test_a_collapse_is_reported_once_per_run_of_skips() -> None:
    precision = fp16(collapse_after=2)
    model = overflowing_model()

    with pytest.warns(mixprec.PrecisionWarning) as caught:
        train(precision, model, [False] * 5)

    assert len([w for w in caught if "collapsed" in str(w.message)]) == 1


def test_a_scale_below_min_scale_is_a_collapse() -> None:
    precision = fp16(min_scale=300.0, on_collapse="raise")
    model = nn.Sequential(nn.Linear(8, 1))
    train(precision, model, [True])  # 1024 -> 512

    with pytest.raises(mixprec.CollapseError, match=r"fell to 256, below min_scale=300"):
        train(precision, model, [True])


def test_skips_fewer_than_collapse_after_are_no_collapse(recwarn: pytest.WarningsRecorder) -> None:
    precision = fp16(collapse_after=3, on_collapse="raise")

    train(precision, nn.Sequential(nn.Linear(8, 1)), [True, True, False, True, True])

    assert precision.telemetry.skipped_steps == 4


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("collapse_after", 0, "an int of at least 1"),
        ("collapse_after", 2.0, "an int of at least 1"),
        ("collapse_after", True, "an int of at least 1"),
        ("min_scale", -1.0, "a positive finite number or None"),
        ("min_scale", math.inf, "a positive finite number or None"),
        ("on_collapse", "ignore", "not one of ['warn', 'raise']"),
        ("locate_overflow", 1, "not True or False"),
        ("overflow_margin", 1.0, "between 0 and 1"),
    ],
)
def test_an_invalid_telemetry_option_is_an_option_error_saying_the_valid_values(
    option: str, value: Any, valid: str
) -> None:
    with pytest.raises(mixprec.OptionError, match=rf"{option}=.*{valid}".replace("[", r"\[").replace("]", r"\]")):
        mixprec.get_precision("16-mixed", "cpu", **{option: value})


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true", "16-true"])
def test_every_precision_takes_the_telemetry_options(precision: str) -> None:
    options = {"collapse_after": 5, "min_scale": 1.0, "on_collapse": "raise", "locate_overflow": False}

    assert mixprec.get_precision(precision, "cpu", **options).telemetry.steps == 0


def test_the_telemetry_options_are_all_documented_in_get_precision() -> None:
    doc = mixprec.get_precision.__doc__ or ""

    assert [name for name in TELEMETRY_OPTIONS if name not in doc] == []


# --- the state ------------------------------------------------------------------------------------


def test_state_dict_keeps_the_gradscaler_keys_at_the_top_level_and_adds_the_manifest_and_counters() -> None:
    precision = fp16()
    train(precision, nn.Sequential(nn.Linear(8, 1)), [True, False])

    state = precision.state_dict()

    assert {key: value for key, value in state.items() if key != "mixprec"} == precision.scaler.state_dict()
    assert state["mixprec"]["manifest"] == {
        "precision": "16-mixed",
        "backend": "cpu",
        "distribution": "mixprec-cpu",
        "version": state["mixprec"]["manifest"]["version"],
        "mixprec": mixprec.__version__,
    }
    assert state["mixprec"]["telemetry"] == {
        "steps": 2,
        "skipped_steps": 1,
        "consecutive_skips": 0,
        "last_overflow_step": 0,
    }


def test_loading_a_state_restores_the_counters_in_a_new_object() -> None:
    precision = fp16()
    train(precision, nn.Sequential(nn.Linear(8, 1)), [True, True])
    resumed = fp16()

    resumed.load_state_dict(precision.state_dict())

    assert resumed.telemetry == precision.telemetry


def test_a_state_without_the_mixprec_entry_loads_and_leaves_the_counters_at_zero() -> None:
    precision = fp16()
    old = {**precision.scaler.state_dict(), "scale": 64.0}

    precision.load_state_dict(old)

    assert precision.telemetry == mixprec.Telemetry(scale=64.0)


def test_a_state_with_only_the_mixprec_entry_is_refused_where_there_is_a_scaler() -> None:
    state = mixprec.get_precision("bf16-mixed", "cpu").state_dict()

    with pytest.raises(mixprec.StateDictError, match="holds no GradScaler state"):
        fp16().load_state_dict(state)


def test_gradscaler_state_beside_the_mixprec_entry_is_refused_where_there_is_no_scaler() -> None:
    state = fp16().state_dict()
    target = mixprec.get_precision("bf16-mixed", "cpu")

    with pytest.raises(mixprec.StateDictError, match="has no GradScaler"):
        target.load_state_dict(state)


def test_a_malformed_mixprec_entry_is_refused_and_changes_nothing() -> None:
    precision = fp16()
    state = fp16().state_dict()
    state["mixprec"] = {**state["mixprec"], "telemetry": {"steps": -1}}

    with pytest.raises(mixprec.StateDictError, match="'mixprec' entry"):
        precision.load_state_dict({**state, "scale": 8.0})

    assert precision.telemetry == mixprec.Telemetry(scale=1024.0)


def test_resuming_under_another_backend_version_warns_saying_what_changed() -> None:
    state = fp16().state_dict()
    state["mixprec"]["manifest"]["version"] = "0.0.1"

    with pytest.warns(mixprec.PrecisionWarning, match=r"version: '0.0.1' -> '"):
        fp16().load_state_dict(state)


def test_resuming_under_the_same_backend_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    fp16().load_state_dict(fp16().state_dict())

    assert [str(w.message) for w in recwarn if "another backend" in str(w.message)] == []


@settings(max_examples=30, deadline=None)
@given(
    steps=st.integers(0, 10**9),
    skipped=st.integers(0, 10**9),
    consecutive=st.integers(0, 10**9),
    last=st.none() | st.integers(0, 10**9),
)
def test_any_counters_round_trip_through_the_state(
    steps: int, skipped: int, consecutive: int, last: int | None
) -> None:
    state = mixprec.get_precision("32-true", "cpu").state_dict()
    counters = {"steps": steps, "skipped_steps": skipped, "consecutive_skips": consecutive, "last_overflow_step": last}
    state["mixprec"]["telemetry"] = counters
    target = mixprec.get_precision("32-true", "cpu")

    target.load_state_dict(state)

    assert target.state_dict()["mixprec"]["telemetry"] == counters


# --- the overflow locator -------------------------------------------------------------------------


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_the_locator_names_the_first_module_whose_forward_output_overflows() -> None:
    precision = fp16()
    model = overflowing_model()

    warned = pytest.warns(mixprec.PrecisionWarning, match=r"module '2' \(Amplify\) produced an inf in its forward")
    with warned, mixprec.locate_overflow(model, precision) as locator:
        train(precision, model, [False, False])

    assert locator.found == mixprec.Overflow("2", "Amplify", "forward", 0, "inf", "float16", math.inf)
    assert precision.telemetry.overflow is None  # the locator left with the block


def test_the_locator_reports_a_value_near_the_dtypes_largest() -> None:
    precision = fp16()
    model = overflowing_model(factor=1.0)
    model[2].factor = 60000.0  # tanh's outputs reach 1: 60000 of float16's 65504
    with torch.no_grad():
        model[0].weight.fill_(10.0)  # most tanh outputs are +-1

    warned = pytest.warns(mixprec.PrecisionWarning, match="near the largest float16")
    with warned, mixprec.locate_overflow(model, precision, margin=0.5) as locator:
        train(precision, model, [False])

    assert locator.found is not None
    assert (locator.found.module, locator.found.kind) == ("2", "near_max")


def test_the_locator_finds_an_overflow_in_backward_by_the_module_whose_output_gradient_is_not_finite() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    with mixprec.locate_overflow(model) as locator:
        loss = model(torch.ones(2, 4)).sum() * math.inf  # finite forward, inf gradient for every output

        with pytest.warns(mixprec.PrecisionWarning, match="backward"):
            loss.backward()

    assert locator.found is not None
    assert (locator.found.module, locator.found.phase, locator.found.kind) == ("1", "backward", "inf")


def test_collapse_with_the_locator_on_names_the_module_in_the_error() -> None:
    precision = fp16(collapse_after=2, on_collapse="raise", locate_overflow=True)
    model = precision.convert_module(overflowing_model())

    raised = pytest.raises(mixprec.CollapseError, match=r"module '2' \(Amplify\) produced an inf")
    with raised, pytest.warns(mixprec.PrecisionWarning, match="located an overflow"):
        train(precision, model, [False] * 5)

    assert precision.telemetry.overflow is not None
    assert precision.telemetry.overflow.step == 0


def test_no_hook_is_installed_when_location_is_off() -> None:
    model = overflowing_model()

    fp16().convert_module(model)

    assert _hook_count(model) == 0


def test_the_option_installs_the_hooks_in_convert_module() -> None:
    model = overflowing_model()

    fp16(locate_overflow=True).convert_module(model)

    assert _hook_count(model) == len(list(model.modules()))


def test_the_context_manager_removes_every_hook_when_the_block_ends() -> None:
    model = overflowing_model()

    with mixprec.locate_overflow(model) as locator:
        assert _hook_count(model) > 0

    assert _hook_count(model) == 0
    assert not locator.installed


def test_the_locator_refuses_a_compiled_model_saying_why() -> None:
    compiled = torch.compile(overflowing_model())

    with pytest.raises(mixprec.LocateOverflowError, match="compiled"), mixprec.locate_overflow(compiled):  # type: ignore[arg-type]
        pass


def test_the_locator_refuses_a_precision_without_telemetry() -> None:
    from lightning.fabric.plugins.precision import MixedPrecision

    plain = MixedPrecision("bf16-mixed", "cpu")

    with pytest.raises(mixprec.LocateOverflowError, match="records no telemetry"):
        mixprec.locate_overflow(nn.Linear(2, 2), plain).__enter__()


@pytest.mark.parametrize("strategy", [None, "fsdp"])
@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true", "bf16-true"])
def test_every_object_the_builders_build_reports_telemetry_and_saves_the_manifest(
    precision: str, target: str, strategy: str | None
) -> None:
    backend = "core" if "true" in precision else None  # the core's builders, not mixprec-sr's own bf16-true
    obj = mixprec.get_precision(precision, "cpu", target=target, strategy=strategy, backend=backend)

    scale = obj.scaler.get_scale() if obj.scaler is not None else None
    assert obj.telemetry == mixprec.Telemetry(scale=scale)
    assert obj.state_dict()["mixprec"]["manifest"]["precision"] == precision


def test_an_object_of_a_backend_without_telemetry_refuses_the_telemetry_options(site: Any) -> None:
    from tests.conformance.backends import broken_policy, install

    lightning_only = broken_policy(create="return MixedPrecision(request.precision, request.device.type)")
    install(site, "plain-lightning", lightning_only, precisions=("bf16-mixed",))

    with pytest.raises(mixprec.OptionError, match=r"records no telemetry, so it cannot take \['collapse_after'\]"):
        mixprec.get_precision("bf16-mixed", "cpu", backend="plain-lightning", collapse_after=3)
