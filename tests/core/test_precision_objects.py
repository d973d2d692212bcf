"""What the core's builders in mixprec.precision promise, whatever backend calls them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mixprec

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

VALID = {"init_scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 10}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("init_scale", 0.0),
        ("init_scale", -1.0),
        ("init_scale", math.inf),
        ("init_scale", math.nan),
        ("init_scale", "1024"),
        ("growth_factor", 1.0),
        ("growth_factor", 0.5),
        ("backoff_factor", 1.0),
        ("backoff_factor", 2.0),
        ("backoff_factor", 0.0),
        ("growth_interval", 0),
        ("growth_interval", 2.5),
        ("growth_interval", True),
    ],
)
def test_an_invalid_gradscaler_option_value_is_an_option_error_naming_it(option: str, value: Any) -> None:
    with pytest.raises(mixprec.OptionError, match=option):
        mixprec.get_precision("16-mixed", "cpu", **{option: value})


def test_valid_gradscaler_options_reach_the_scaler() -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", **VALID)

    state = precision.state_dict()
    assert state["scale"] == VALID["init_scale"]
    assert state["growth_factor"] == VALID["growth_factor"]
    assert state["backoff_factor"] == VALID["backoff_factor"]
    assert state["growth_interval"] == VALID["growth_interval"]


@settings(max_examples=60, deadline=None)
@given(
    option=st.sampled_from(sorted(VALID)),
    value=st.one_of(st.floats(allow_nan=True), st.integers(-(2**70), 2**70), st.text(max_size=3), st.none()),
)
def test_any_gradscaler_option_value_builds_or_is_an_option_error(option: str, value: Any) -> None:
    try:
        precision = mixprec.get_precision("16-mixed", "cpu", **{option: value})
    except mixprec.OptionError:
        return
    assert precision.scaler is not None


@pytest.mark.parametrize("precision", ["32-true", "64-true", "16-true", "bf16-true"])
def test_a_true_precision_refuses_gradscaler_state_instead_of_ignoring_it(precision: str) -> None:
    scaler_state = torch.amp.GradScaler("cpu", init_scale=8.0).state_dict()

    with pytest.raises(mixprec.StateDictError, match="has no GradScaler"):
        mixprec.get_precision(precision, "cpu").load_state_dict(scaler_state)


@pytest.mark.parametrize("precision", ["32-true", "64-true", "16-true", "bf16-true"])
def test_a_true_precision_round_trips_its_empty_state(precision: str) -> None:
    source = mixprec.get_precision(precision, "cpu")
    target = mixprec.get_precision(precision, "cpu")

    target.load_state_dict(source.state_dict())

    assert target.state_dict() == {}
