"""The data the core and policies exchange checks itself: Device, Availability, and where a contract comes from."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import mixprec
from mixprec import cli
from mixprec._backend import MAX_DEVICE_INDEX

HUGE_INDEX = "cpu:" + "9" * 5000


@pytest.mark.parametrize(
    "call",
    [
        lambda: mixprec.get_precision("32-true", HUGE_INDEX),
        lambda: mixprec.explain("32-true", HUGE_INDEX),
        lambda: mixprec.available(HUGE_INDEX),
        lambda: mixprec.Device.parse(HUGE_INDEX),
    ],
    ids=["get_precision", "explain", "available", "Device.parse"],
)
def test_a_device_string_with_an_absurdly_long_index_is_a_device_error(call: Any) -> None:
    with pytest.raises(mixprec.DeviceError, match=r"\(5000 digits\) is out of range") as raised:
        call()

    assert len(str(raised.value)) < 300


def test_mixprec_list_with_an_absurdly_long_device_index_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "--device", HUGE_INDEX]) == 2

    assert "is out of range" in capsys.readouterr().err


def test_an_index_just_past_what_a_device_takes_is_a_device_error() -> None:
    with pytest.raises(mixprec.DeviceError, match="out of range"):
        mixprec.get_precision("32-true", f"cpu:{MAX_DEVICE_INDEX + 1}")


def test_a_large_index_that_fits_is_a_device_that_does_not_exist() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match=f"cpu:{MAX_DEVICE_INDEX} does not exist"):
        mixprec.get_precision("32-true", f"cpu:{MAX_DEVICE_INDEX}")


def test_a_torch_device_with_a_large_index_is_a_device_that_does_not_exist() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match="cpu:127 does not exist"):
        mixprec.get_precision("32-true", torch.device("cpu", 127))


@pytest.mark.parametrize(
    ("kind", "index"),
    [("cuda", -1), ("cuda", True), ("cuda", "0"), ("cuda", 2**64), ("CUDA", None), ("", None), (3, None)],
    ids=["negative", "bool", "str-index", "huge", "capitals", "empty", "int-type"],
)
def test_a_device_refuses_a_malformed_type_or_index(kind: Any, index: Any) -> None:
    with pytest.raises(mixprec.DeviceError):
        mixprec.Device(kind, index)


def test_a_device_built_from_str_and_int_subclasses_holds_plain_values() -> None:
    class Name(str):
        pass

    class Index(int):
        pass

    device = mixprec.Device(Name("cuda"), Index(1))

    assert (type(device.type), type(device.index)) == (str, int)
    assert device == mixprec.Device("cuda", 1)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        (("maybe", ""), "status 'maybe' must be one of available, slow, unavailable, failed"),
        ((None, ""), "status None must be one of"),
        (("available", 42), "reason 42 must be a str"),
        (("slow", None), "reason None must be a str"),
    ],
    ids=["unknown-status", "status-none", "reason-int", "reason-none"],
)
def test_an_availability_refuses_a_bad_status_or_reason(fields: tuple[Any, Any], complaint: str) -> None:
    with pytest.raises(mixprec.PluginError, match="Invalid Availability") as raised:
        mixprec.Availability(*fields)

    assert complaint in str(raised.value)


def test_contract_source_says_standard_declared_or_undeclared() -> None:
    backend = mixprec.Backend(
        "acme",
        "cpu",
        ("bf16-mixed", "fp8-mixed", "acme-fp4", "acme-x"),
        "acme.policy",
        contracts={"acme-fp4": mixprec.Contract("bfloat16", autocast=True)},
    )

    sources = [backend.contract_source(p) for p in backend.precisions]

    assert sources == ["standard", "standard", "declared", "undeclared"]


def test_unscaling_error_is_caught_where_lightnings_fabric_and_trainer_errors_are() -> None:
    error = mixprec.UnscalingError("clipping with a fused optimizer")

    assert isinstance(error, mixprec.PrecisionError)
    assert isinstance(error, NotImplementedError)
    assert isinstance(error, RuntimeError)
