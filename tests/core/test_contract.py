"""The Contract type: what a precision promises, as data a plugin can declare without importing torch."""

from __future__ import annotations

from typing import Any

import pytest

from mixprec import STANDARD_CONTRACTS, Backend, Contract, PluginError


def _backend(**fields: Any) -> Backend:
    defaults: dict[str, Any] = {
        "name": "acme",
        "device_type": "cpu",
        "precisions": ("bf16-mixed", "acme-fp8"),
        "policy": "acme.policy",
    }
    return Backend(**{**defaults, **fields})


def test_standard_contracts_cover_the_six_precisions_and_fp8_mixed() -> None:
    assert set(STANDARD_CONTRACTS) == {
        "16-mixed",
        "bf16-mixed",
        "16-true",
        "bf16-true",
        "32-true",
        "64-true",
        "fp8-mixed",
    }


def test_only_16_mixed_scales_the_loss() -> None:
    assert [p for p, c in STANDARD_CONTRACTS.items() if c.loss_scaling] == ["16-mixed"]


def test_fp8_mixed_converts_linear_layers_to_float8_matmuls_over_bf16_autocast() -> None:
    fp8 = STANDARD_CONTRACTS["fp8-mixed"]
    assert (fp8.compute_dtype, fp8.autocast, fp8.loss_scaling) == ("bfloat16", True, False)
    assert fp8.converts_modules == ("torch.nn.Linear",)
    assert fp8.matmul_dtype == "float8_e4m3fn"
    assert fp8.parameter_dtype == "float32"


def test_rtol_defaults_to_the_tolerance_of_the_dtype_the_matmuls_compute_in() -> None:
    assert Contract("bfloat16").rtol == 0.1
    assert Contract("bfloat16", matmul_dtype="float8_e4m3fn").rtol == 0.25
    assert Contract("float32", training_rtol=0.5).rtol == 0.5


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"compute_dtype": "half"}, "compute_dtype 'half'"),
        ({"compute_dtype": "float32", "parameter_dtype": 32}, "parameter_dtype 32"),
        ({"compute_dtype": "float32", "matmul_dtype": "int8"}, "matmul_dtype 'int8'"),
        ({"compute_dtype": "float32", "autocast": 1}, "autocast 1 must be a bool"),
        ({"compute_dtype": "float32", "converts_modules": "torch.nn.Linear"}, "converts_modules"),
        ({"compute_dtype": "float32", "converts_modules": ("Linear",)}, "package.module.Class"),
        ({"compute_dtype": "float32", "training_rtol": 0.0}, "training_rtol 0.0"),
        ({"compute_dtype": "float32", "training_rtol": float("nan")}, "training_rtol nan"),
        ({"compute_dtype": "float32", "training_rtol": True}, "training_rtol True"),
        ({"compute_dtype": "float32", "unsupported": {"fused_optimizers": ""}}, "non-empty reasons"),
        ({"compute_dtype": "float32", "description": None}, "description None"),
    ],
)
def test_a_malformed_contract_is_a_plugin_error_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(PluginError, match="Invalid Contract") as raised:
        Contract(**fields)
    assert problem in str(raised.value)


def test_a_backend_declares_the_contract_of_its_own_precision() -> None:
    declared = Contract("bfloat16", autocast=True, converts_modules=("torch.nn.Linear",), matmul_dtype="float8_e5m2")
    backend = _backend(contracts={"acme-fp8": declared})
    assert backend.contract("acme-fp8") is declared


def test_a_standard_precision_has_the_cores_contract_whatever_the_backend() -> None:
    assert _backend().contract("bf16-mixed") is STANDARD_CONTRACTS["bf16-mixed"]


def test_an_undeclared_precision_has_no_contract() -> None:
    assert _backend().contract("acme-fp8") is None


def test_a_backend_cannot_redefine_a_standard_contract() -> None:
    with pytest.raises(PluginError, match=r"contracts \['bf16-mixed'\] are standard precisions"):
        _backend(contracts={"bf16-mixed": Contract("float16")})


def test_a_contract_for_a_precision_the_backend_does_not_offer_is_refused() -> None:
    with pytest.raises(PluginError, match=r"contracts \['other'\] are for precisions it does not offer"):
        _backend(contracts={"other": Contract("float16")})


def test_contracts_must_be_contract_objects() -> None:
    with pytest.raises(PluginError, match=r"must map precision strings to mixprec\.Contract"):
        _backend(contracts={"acme-fp8": {"compute_dtype": "bfloat16"}})


def test_declared_contracts_cannot_be_changed_after_the_description_is_built() -> None:
    backend = _backend(contracts={"acme-fp8": Contract("bfloat16")})
    with pytest.raises(TypeError):
        backend.contracts["acme-fp8"] = Contract("float16")  # type: ignore[index]
