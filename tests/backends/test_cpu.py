"""mixprec-cpu's policy, and ``get_precision`` with it on this CPU.

The seam: ``mixprec_cpu.policy.decide(precision, device, CPUFeatures)`` is a pure function of a
probe result. Tests for CPUs this machine is not hand ``decide`` a ``CPUFeatures`` made here;
nothing in torch is patched. The real probe and ``get_precision`` run on this CPU; they do not
assume what it computes natively but ask the probe. Training on this CPU is in test_cpu_training.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mixprec
from mixprec import AUTO_ORDER, Device, OptionError, PrecisionWarning
from mixprec_cpu import policy
from mixprec_cpu.policy import CPUFeatures, decide

CPU = Device("cpu")
AVX2_ONLY = CPUFeatures(avx512_bf16=False, amx_tile=False, avx512_fp16=False, amx_fp16=False)
COOPER_LAKE = CPUFeatures(avx512_bf16=True, amx_tile=False, avx512_fp16=False, amx_fp16=False)
SAPPHIRE_RAPIDS = CPUFeatures(avx512_bf16=True, amx_tile=True, avx512_fp16=True, amx_fp16=False)
GRANITE_RAPIDS = CPUFeatures(avx512_bf16=True, amx_tile=True, avx512_fp16=True, amx_fp16=True)


# --- decide: every branch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "features", "status"),
    [
        ("bf16-true", COOPER_LAKE, "available"),
        ("bf16-true", AVX2_ONLY, "slow"),
        ("16-true", SAPPHIRE_RAPIDS, "available"),
        ("16-true", COOPER_LAKE, "slow"),
    ],
)
def test_a_true_half_precision_has_the_status_of_its_dtype(precision: str, features: CPUFeatures, status: str) -> None:
    assert decide(precision, CPU, features).status == status


def test_slow_fp16_suggests_bf16_of_the_same_kind_where_bf16_is_native() -> None:
    assert "use 'bf16-true'" in decide("16-true", CPU, COOPER_LAKE).reason
    assert "use 'bf16-mixed'" in decide("16-mixed", CPU, COOPER_LAKE).reason


def test_a_precision_the_backend_does_not_offer_is_unavailable() -> None:
    found = decide("64-true", CPU, COOPER_LAKE)
    assert found.status == "unavailable"
    assert "does not offer '64-true'" in found.reason


def test_a_cpu_index_other_than_0_does_not_exist() -> None:
    found = decide("bf16-mixed", Device("cpu", 1), COOPER_LAKE)
    assert found.status == "unavailable"
    assert found.reason == "there is one CPU device; cpu:1 does not exist, use 'cpu'"


def test_cpu_0_is_the_cpu() -> None:
    assert decide("bf16-mixed", Device("cpu", 0), COOPER_LAKE).status == "available"


def test_bf16_mixed_is_available_with_avx512_bf16() -> None:
    found = decide("bf16-mixed", CPU, COOPER_LAKE)
    assert found.status == "available"
    assert found.reason == "the CPU computes bfloat16 natively (AVX512-BF16)"


def test_bf16_mixed_is_available_with_amx_alone() -> None:
    amx = CPUFeatures(avx512_bf16=False, amx_tile=True, avx512_fp16=False, amx_fp16=False)
    assert decide("bf16-mixed", CPU, amx).reason == "the CPU computes bfloat16 natively (AMX)"


def test_bf16_mixed_is_slow_where_bfloat16_is_emulated() -> None:
    found = decide("bf16-mixed", CPU, AVX2_ONLY)
    assert found.status == "slow"
    assert "neither AVX512-BF16 nor AMX" in found.reason
    assert found.reason.endswith("use '32-true'")


def test_16_mixed_is_available_with_avx512_fp16() -> None:
    found = decide("16-mixed", CPU, SAPPHIRE_RAPIDS)
    assert found.status == "available"
    assert found.reason == "the CPU computes float16 natively (AVX512-FP16)"


def test_16_mixed_is_available_with_amx_fp16() -> None:
    assert decide("16-mixed", CPU, GRANITE_RAPIDS).reason == "the CPU computes float16 natively (AVX512-FP16, AMX-FP16)"


def test_16_mixed_is_slow_where_float16_is_emulated_and_suggests_native_bf16() -> None:
    found = decide("16-mixed", CPU, COOPER_LAKE)
    assert found.status == "slow"
    assert "neither AVX512-FP16 nor AMX-FP16" in found.reason
    assert found.reason.endswith("use 'bf16-mixed'")


def test_16_mixed_is_slow_and_suggests_32_true_where_neither_dtype_is_native() -> None:
    assert decide("16-mixed", CPU, AVX2_ONLY).reason.endswith("use '32-true'")


def auto(features: CPUFeatures) -> str:
    """What the core's "auto" picks from these statuses: the first of AUTO_ORDER that is available."""
    return next((p for p in AUTO_ORDER[:-1] if decide(p, CPU, features).status == "available"), AUTO_ORDER[-1])


@given(st.builds(CPUFeatures, st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_auto_statuses_pick_a_native_dtype_or_32_true(features: CPUFeatures) -> None:
    expected = "bf16-mixed" if features.native_bf16 else "16-mixed" if features.native_fp16 else "32-true"
    assert auto(features) == expected


def test_auto_statuses_give_32_true_on_an_avx2_only_cpu() -> None:
    assert auto(AVX2_ONLY) == "32-true"


# --- the real probe on this machine -------------------------------------------------------------


def test_the_real_probe_reports_torchs_cpu_flags() -> None:
    found = policy.probe()
    assert found.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()
    assert found.amx_tile == torch.cpu._is_amx_tile_supported()
    assert found.amx_fp16 == torch.cpu._is_amx_fp16_supported()


def test_avx512_fp16_is_never_reported_without_avx512() -> None:
    assert policy.probe().avx512_fp16 <= torch.cpu._is_avx512_supported()


def test_explain_auto_on_this_cpu_follows_the_probe() -> None:
    assert mixprec.explain("auto", "cpu").precision == auto(policy.probe())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_get_precision_warns_exactly_when_the_dtype_is_slow_here(precision: str) -> None:
    slow = policy.availability(precision, CPU).status == "slow"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixprec.get_precision(precision, "cpu")
    assert any(issubclass(w.category, PrecisionWarning) for w in caught) == slow


# --- options ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")
def test_an_unknown_scaler_option_is_an_option_error_naming_the_valid_ones() -> None:
    with pytest.raises(
        OptionError, match=r"\['init_scal'\].*\['init_scale', 'growth_factor', 'backoff_factor', 'growth_interval'\]"
    ):
        mixprec.get_precision("16-mixed", "cpu", init_scal=2.0)


@pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")
def test_bf16_mixed_takes_no_scaler_options() -> None:
    with pytest.raises(OptionError, match="takes no options"):
        mixprec.get_precision("bf16-mixed", "cpu", init_scale=2.0)
