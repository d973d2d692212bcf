"""OptionTrial and Contract.option_trials: option values a contract makes the suite try, as data without torch."""

from __future__ import annotations

from typing import Any

import pytest

from mixprec import STANDARD_CONTRACTS, Contract, OptionTrial, PluginError


def test_fp8_mixed_makes_the_suite_filter_its_layers_by_name() -> None:
    assert STANDARD_CONTRACTS["fp8-mixed"].option_trials == (OptionTrial({"module_filter": ("0",)}, converts=("0",)),)


def test_option_values_are_kept_as_read_only_plain_data_with_lists_as_tuples() -> None:
    trial = OptionTrial({"module_filter": ["blocks.*", ["head"]], "recipe": "rowwise"}, converts=["0"])
    assert (dict(trial.options), trial.converts) == (
        {"module_filter": ("blocks.*", ("head",)), "recipe": "rowwise"},
        ("0",),
    )
    with pytest.raises(TypeError):
        trial.options["recipe"] = "tensorwise"  # type: ignore[index]


def test_a_trial_without_converts_is_about_another_effect() -> None:
    assert OptionTrial({"seed": 1}).converts is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"options": {}}, "at least one"),
        ({"options": {1: "x"}}, "option names"),
        ({"options": ["seed"]}, "option names"),
        ({"options": {"module_filter": object()}}, "not plain data"),
        ({"options": {"seed": 1}, "converts": "0"}, "converts '0' must be None or a tuple"),
        ({"options": {"seed": 1}, "converts": (0,)}, "by strings"),
    ],
)
def test_a_malformed_trial_is_a_plugin_error_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(PluginError, match="Invalid OptionTrial") as raised:
        OptionTrial(**fields)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("trials", "problem"),
    [
        (OptionTrial({"seed": 1}), "must be a tuple of mixprec.OptionTrial"),
        (({"seed": 1},), "must hold mixprec.OptionTrial objects"),
        ((OptionTrial({"seed": 1}, converts=()),), "converts_modules is empty"),
    ],
)
def test_a_contract_with_malformed_trials_is_a_plugin_error(trials: Any, problem: str) -> None:
    with pytest.raises(PluginError, match="Invalid Contract") as raised:
        Contract("bfloat16", option_trials=trials)
    assert problem in str(raised.value)


def test_a_list_of_trials_is_kept_as_a_tuple() -> None:
    trials = [OptionTrial({"seed": 1}), OptionTrial({"seed": 2})]
    assert Contract("bfloat16", option_trials=trials).option_trials == tuple(trials)  # type: ignore[arg-type]
