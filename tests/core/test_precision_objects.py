"""What the builders in mixprec.precision promise, whatever backend calls them."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.fabric.plugins.precision import Precision
from torch import nn

import mixprec
from mixprec import Device, Request
from mixprec.precision import (
    MIXED_DTYPES,
    TRUE_PRECISIONS,
    mixed_precision,
    standard_precision,
    strategy_family,
    true_precision,
)

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

VALID = {"init_scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 10}
FLOAT32_MAX = torch.finfo(torch.float32).max
FLOAT32_TINY = torch.finfo(torch.float32).tiny
INT32_MAX = torch.iinfo(torch.int32).max
SCALER_STATE = torch.amp.GradScaler("cpu", init_scale=8.0).state_dict()


def request(precision: str, target: str = "fabric", strategy: str | None = None, **options: Any) -> Request:
    return Request(precision, Device("cpu"), "test", target=target, strategy=strategy, options=options)  # type: ignore[arg-type]


def train_two_steps(precision: Precision) -> nn.Module:
    """Two steps of a small regression through the precision's own methods; returns the model."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        with precision.forward_context():
            loss = model(precision.convert_input(torch.randn(8, 4))).float().pow(2).mean()
        precision.backward(loss, model)
        precision.optimizer_step(optimizer)
    return model


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("init_scale", 0.0),
        ("init_scale", -1.0),
        ("init_scale", math.inf),
        ("init_scale", math.nan),
        ("init_scale", "1024"),
        ("init_scale", 3.5e38),  # finite in Python, infinite as the float32 scale
        ("init_scale", 10**400),  # an int beyond any float
        ("init_scale", 5e-324),  # zero as a float32
        ("init_scale", 1e-40),  # a subnormal float32: its reciprocal overflows float32
        ("growth_factor", 1.0),
        ("growth_factor", 0.5),
        ("growth_factor", 1 + 1e-10),  # 1.0 as a float32: the scale would never grow
        ("growth_factor", 3.5e38),
        ("backoff_factor", 1.0),
        ("backoff_factor", 2.0),
        ("backoff_factor", 0.0),
        ("backoff_factor", 5e-324),  # zero as a float32: the first overflow would zero the scale
        ("backoff_factor", 1 - 1e-10),  # 1.0 as a float32: the scale would never back off
        ("growth_interval", 0),
        ("growth_interval", 2.5),
        ("growth_interval", True),
        ("growth_interval", 2**31),  # beyond the int32 growth tracker
        ("growth_interval", 2**63),  # beyond the int64 kernel argument
    ],
)
def test_an_invalid_gradscaler_option_value_is_an_option_error_naming_it(option: str, value: Any) -> None:
    with pytest.raises(mixprec.OptionError, match=f"{option}=.*must be"):
        mixprec.get_precision("16-mixed", "cpu", **{option: value})


@pytest.mark.parametrize(
    ("option", "valid_range"),
    [
        ("init_scale", "from 1.1754944e-38 to 3.4028235e+38"),
        ("growth_factor", "greater than 1 and at most 3.4028235e+38"),
        ("backoff_factor", "between 0 and 1"),
        ("growth_interval", f"an int from 1 to {INT32_MAX}"),
    ],
)
def test_the_option_error_says_the_valid_range(option: str, valid_range: str) -> None:
    with pytest.raises(mixprec.OptionError, match=re.escape(valid_range)):
        mixprec.get_precision("16-mixed", "cpu", **{option: -1})


def test_an_option_error_quotes_an_int_too_long_to_print() -> None:
    with pytest.raises(mixprec.OptionError, match="an integer of"):
        mixprec.get_precision("16-mixed", "cpu", init_scale=10**5000)


@pytest.mark.parametrize(("init_scale", "backoff_factor"), [(FLOAT32_TINY, 0.5), (2.0**16, 2**-149), (1e-30, 1e-10)])
def test_a_scale_one_backoff_takes_below_the_smallest_normal_float32_is_an_option_error(
    init_scale: float, backoff_factor: float
) -> None:
    with pytest.raises(mixprec.OptionError, match=r"init_scale \* backoff_factor .* smallest normal float32"):
        mixprec.get_precision("16-mixed", "cpu", init_scale=init_scale, backoff_factor=backoff_factor)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("init_scale", 2 * FLOAT32_TINY),  # halved by the default backoff: the smallest normal float32
        ("init_scale", FLOAT32_MAX),
        ("growth_factor", 1 + 2**-23),
        ("growth_factor", FLOAT32_MAX),
        ("backoff_factor", 2**-142),  # takes the default scale, 2**16, to the smallest normal float32
        ("backoff_factor", 1 - 2**-24),
        ("growth_interval", 1),
        ("growth_interval", INT32_MAX),
    ],
)
def test_the_limits_of_each_gradscaler_option_train_without_nan(option: str, value: Any) -> None:
    model = train_two_steps(mixprec.get_precision("16-mixed", "cpu", **{option: value}))

    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_valid_gradscaler_options_reach_the_scaler() -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", **VALID)

    state = precision.state_dict()
    assert state["scale"] == VALID["init_scale"]
    assert state["growth_factor"] == VALID["growth_factor"]
    assert state["backoff_factor"] == VALID["backoff_factor"]
    assert state["growth_interval"] == VALID["growth_interval"]


#: Values at and beyond the limits of the float32 scale, the int32 tracker and the int64 kernel argument.
EXTREMES = [
    *(FLOAT32_MAX, 3.4028235677973366e38, 3.5e38, FLOAT32_TINY, FLOAT32_TINY / 2, 2**-149, 5e-324),
    *(1 + 2**-24, 1 + 2**-23, 1 - 2**-24, 1 - 2**-25, math.inf, -math.inf, math.nan),
    *(INT32_MAX, 2**31, 2**63 - 1, 2**63, 2**64, 10**400, -(2**63), 0, True, False),
]


@settings(max_examples=300, deadline=None)
@given(
    option=st.sampled_from(sorted(VALID)),
    value=st.one_of(
        st.sampled_from(EXTREMES),
        st.floats(),
        st.floats(width=32),
        st.integers(),
        st.text(max_size=3),
        st.none(),
    ),
)
def test_any_gradscaler_option_value_is_refused_or_trains_without_nan(option: str, value: Any) -> None:
    try:
        precision = mixprec.get_precision("16-mixed", "cpu", **{option: value})
    except (mixprec.OptionError, TypeError):
        return
    model = train_two_steps(precision)

    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0 < precision.state_dict()["scale"] < math.inf


@pytest.mark.parametrize(
    ("entry", "value"), [("scale", math.nan), ("scale", 3.5e38), ("growth_interval", 2**63), ("_growth_tracker", -1)]
)
def test_a_gradscaler_state_with_a_value_torch_cannot_keep_is_a_state_dict_error(entry: str, value: Any) -> None:
    precision = mixprec.get_precision("16-mixed", "cpu")

    with pytest.raises(mixprec.StateDictError, match=f"{entry}="):
        precision.load_state_dict({**SCALER_STATE, entry: value})


#: Each "true" precision with each strategy family it trains in (FSDP does not train in "64-true").
TRUE_PRECISIONS_AND_STRATEGIES = [
    (p, s) for p in TRUE_PRECISIONS for s in (None, "fsdp") if (p, s) != ("64-true", "fsdp")
]


@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize(("precision", "strategy"), TRUE_PRECISIONS_AND_STRATEGIES)
def test_a_true_precision_refuses_gradscaler_state_instead_of_ignoring_it(
    precision: str, strategy: str | None, target: str
) -> None:
    plugin = mixprec.get_precision(precision, "cpu", target=target, strategy=strategy, backend="core")

    with pytest.raises(mixprec.StateDictError, match="has no GradScaler"):
        plugin.load_state_dict(SCALER_STATE)


@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize("precision", TRUE_PRECISIONS)
def test_a_true_precision_round_trips_its_state_without_gradscaler_state(precision: str, target: str) -> None:
    source = mixprec.get_precision(precision, "cpu", target=target, backend="core")
    target_plugin = mixprec.get_precision(precision, "cpu", target=target, backend="core")

    target_plugin.load_state_dict(source.state_dict())

    assert target_plugin.state_dict() == source.state_dict()
    assert list(target_plugin.state_dict()) == ["mixprec"]


@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize("precision", [*MIXED_DTYPES, *TRUE_PRECISIONS])
def test_standard_precision_builds_each_precision_as_its_contract_says(precision: str, target: str) -> None:
    contract = mixprec.STANDARD_CONTRACTS[precision]

    built = standard_precision(request(precision, target))
    module = built.convert_module(nn.Linear(2, 2))
    with built.forward_context():
        output = module(built.convert_input(torch.ones(1, 2)))

    assert built.precision == precision
    assert (getattr(built, "scaler", None) is not None) == contract.loss_scaling
    assert {p.dtype for p in module.parameters()} == {getattr(torch, contract.parameter_dtype)}
    assert output.dtype == getattr(torch, contract.compute_dtype)


def test_standard_precision_refuses_fp8_mixed_naming_a_backend_for_it() -> None:
    with pytest.raises(mixprec.PrecisionError, match="mixprec-fp8"):
        standard_precision(request("fp8-mixed"))


@pytest.mark.parametrize(("precision", "scaler"), [("16-mixed", False), ("bf16-mixed", True)])
def test_mixed_precision_with_a_scaler_against_the_contract_is_a_precision_error(precision: str, scaler: bool) -> None:
    with pytest.raises(mixprec.PrecisionError, match=f"pass scaler={not scaler}"):
        mixed_precision(request(precision), scaler=scaler)


def test_true_precision_refuses_a_mixed_precision_naming_the_ones_it_builds() -> None:
    with pytest.raises(mixprec.PrecisionError, match="'32-true'"):
        true_precision(request("bf16-mixed"))


@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize(
    ("strategy", "family"),
    [(None, None), ("auto", None), ("ddp", None), ("ddp_spawn", None), ("fsdp", "fsdp"), ("fsdp_cpu_offload", "fsdp")],
)
def test_strategy_family_names_the_precision_class_a_strategy_takes(
    target: str, strategy: str | None, family: str | None
) -> None:
    assert strategy_family(request("bf16-mixed", target, strategy)) == family


@pytest.mark.parametrize(("strategy", "says"), [("deepspeed", "no precision for strategy"), ("fdsp", "Did you mean")])
def test_strategy_family_refuses_a_strategy_mixprec_serves_no_precision_for(strategy: str, says: str) -> None:
    with pytest.raises(mixprec.PrecisionError, match=says):
        strategy_family(request("bf16-mixed", strategy=strategy))


def test_trainer_autocast_precision_is_what_the_trainer_gets_under_lightnings_class_name() -> None:
    from lightning.pytorch.plugins.precision import MixedPrecision

    from mixprec.precision import TrainerAutocastPrecision

    assert issubclass(TrainerAutocastPrecision, MixedPrecision)
    # The Trainer files the precision's state in a checkpoint under the class name.
    assert TrainerAutocastPrecision.__qualname__ == "MixedPrecision"
    assert type(mixprec.get_precision("bf16-mixed", "cpu", target="trainer", backend="cpu")) is TrainerAutocastPrecision
