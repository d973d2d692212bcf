"""mixprec-accelerator's policy, as a function of what torch says of a device type: every device, no device needed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mixprec import Device
from mixprec_accelerator.policy import OFFERED, SCALER_KERNELS, AcceleratorProbe, decide, device_types, probe

ALL_DTYPES = ("bfloat16", "float16")


def found(
    dtypes: tuple[str, ...] = ALL_DTYPES, missing: tuple[str, ...] = (), autocast: bool = True, reached: bool = True
) -> AcceleratorProbe:
    return AcceleratorProbe(
        "npu", reached, autocast, dtypes, "torch.npu.get_amp_supported_dtype()", "PrivateUse1", missing
    )


def test_a_listed_dtype_is_available_with_native_speed_unknown() -> None:
    answer = decide("bf16-mixed", Device("npu"), found())
    assert answer.status == "available"
    assert "native speed unknown: run mixprec bench" in answer.reason


def test_a_dtype_the_device_module_does_not_list_is_unavailable_naming_the_list() -> None:
    answer = decide("bf16-mixed", Device("npu"), found(dtypes=("float16",)))
    assert answer.status == "unavailable"
    assert "bfloat16 is not among the dtypes torch.npu.get_amp_supported_dtype() lists (float16)" in answer.reason
    assert "use '16-mixed'" in answer.reason


def test_16_mixed_without_the_grad_scaler_kernels_is_unavailable_naming_them() -> None:
    answer = decide("16-mixed", Device("npu"), found(missing=SCALER_KERNELS[1:]))
    assert answer.status == "unavailable"
    assert "aten::_amp_update_scale_ has no kernel for dispatch key PrivateUse1" in answer.reason
    assert "use 'bf16-mixed'" in answer.reason


def test_a_device_type_without_autocast_has_no_mixed_precision() -> None:
    answer = decide("bf16-mixed", Device("npu"), found(autocast=False))
    assert (answer.status, answer.reason) == ("unavailable", "torch has no autocast for 'npu': use '32-true'")


def test_a_device_type_torch_does_not_reach_is_unavailable_saying_what_to_install() -> None:
    answer = decide("bf16-true", Device("npu"), found(reached=False))
    assert answer.status == "unavailable"
    assert "torch_npu" in answer.reason


def test_cpu_cuda_and_mps_are_left_to_their_own_backends() -> None:
    for kind, distribution in (("cpu", "mixprec-cpu"), ("cuda", "mixprec-cuda"), ("mps", "mixprec-mps")):
        answer = decide("bf16-mixed", Device(kind), found())
        assert answer.status == "unavailable"
        assert f"pip install {distribution}" in answer.reason


@given(
    precision=st.sampled_from(sorted(OFFERED)),
    dtypes=st.lists(st.sampled_from(ALL_DTYPES), unique=True).map(tuple),
    missing=st.lists(st.sampled_from(SCALER_KERNELS), unique=True).map(tuple),
    autocast=st.booleans(),
)
def test_usable_only_with_a_listed_dtype_and_for_16_mixed_both_scaler_kernels(
    precision: str, dtypes: tuple[str, ...], missing: tuple[str, ...], autocast: bool
) -> None:
    answer = decide(precision, Device("npu", 0), found(dtypes, missing, autocast))
    expected = (
        OFFERED[precision] in dtypes
        and (autocast or precision.endswith("-true"))
        and not (precision == "16-mixed" and missing)
    )
    assert answer.usable == expected
    assert answer.status in ("available", "unavailable")


#: Collected before the fake device is registered: whether torch reaches an accelerator of its own here.
no_accelerator = pytest.mark.skipif(bool(device_types()), reason="torch reaches an accelerator here")


@pytest.mark.skipif(torch.xpu._is_compiled(), reason="this torch is built for Intel GPUs")
def test_xpu_on_a_torch_without_xpu_kernels_has_no_grad_scaler() -> None:
    # This torch has the XPU dispatch key but registers no XPU kernels: the look-up finds neither.
    xpu = probe("xpu")
    assert xpu.dispatch_key == "XPU"
    assert xpu.missing_kernels == SCALER_KERNELS
    assert torch.xpu.is_initialized() is False


@no_accelerator
def test_without_an_accelerator_list_shows_the_backend_once_saying_none_is_here() -> None:
    import mixprec

    rows = [r for r in mixprec.available() if r.backend == "accelerator"]
    assert {(r.device_type, r.status) for r in rows} == {("*", "unavailable")}
    assert all("torch reaches no other accelerator here" in r.reason for r in rows)


@no_accelerator
def test_without_an_accelerator_the_backend_is_no_candidate_on_the_cpu() -> None:
    import mixprec

    candidates = {c.backend for c in mixprec.explain("bf16-mixed", "cpu").candidates}
    assert "accelerator" not in candidates
