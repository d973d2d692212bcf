"""mixprec-mps's policy and objects.

The seam: ``mixprec_mps.policy.decide(precision, device, MPSProbe)`` is a pure function of a probe
result. Tests for Macs and torch versions this machine is not hand ``decide`` an ``MPSProbe`` made
here (the ``mac`` helper); nothing in torch or the platform module is patched. The real ``probe()``
runs too and, off macOS, must report MPS unavailable with that reason. ``create`` builds real
objects without a Mac: torch constructs MPS autocast and an MPS GradScaler anywhere.
"""

from __future__ import annotations

import platform

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from lightning.fabric.plugins.precision import Precision

import mixprec
from mixprec import AUTO_ORDER, Device, OptionError, Request
from mixprec_mps import policy
from mixprec_mps.policy import MPSProbe, decide, release

MPS = Device("mps")
not_a_mac = pytest.mark.skipif(platform.system() == "Darwin", reason="this is a Mac")


def mac(torch_version: tuple[int, int] = (2, 8), macos: tuple[int, int] = (15, 0)) -> MPSProbe:
    """An Apple-silicon Mac with a working MPS device, this torch and this macOS."""
    return MPSProbe(torch_version, macos, built=True, available=True)


# --- decide: every branch ---------------------------------------------------------------------


def test_a_precision_the_backend_does_not_offer_is_unavailable() -> None:
    found = decide("64-true", MPS, mac())
    assert found.status == "unavailable"
    assert "does not offer '64-true'" in found.reason


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_off_macos_mps_is_unavailable_and_says_so(precision: str) -> None:
    found = decide(precision, MPS, MPSProbe((2, 8), None, built=False, available=False))
    assert found.status == "unavailable"
    assert "runs only on macOS" in found.reason


def test_torch_built_without_mps_is_unavailable_and_says_so() -> None:
    found = decide("bf16-mixed", MPS, MPSProbe((2, 8), (15, 0), built=False, available=False))
    assert found.status == "unavailable"
    assert "torch 2.8 was built without MPS" in found.reason


def test_mps_built_but_not_available_is_unavailable_and_names_the_requirements() -> None:
    found = decide("16-mixed", MPS, MPSProbe((2, 8), (12, 1), built=True, available=False))
    assert found.status == "unavailable"
    assert "finds no usable MPS device on macOS 12.1" in found.reason
    assert "macOS 12.3" in found.reason


def test_an_index_other_than_0_does_not_exist() -> None:
    found = decide("bf16-mixed", Device("mps", 1), mac())
    assert found.status == "unavailable"
    assert found.reason == "there is one MPS device; mps:1 does not exist, use 'mps'"


def test_16_mixed_needs_torch_2_5_for_float16_autocast() -> None:
    found = decide("16-mixed", MPS, mac(torch_version=(2, 4)))
    assert found.status == "unavailable"
    assert "float16 autocast on MPS needs torch >= 2.5 (this is torch 2.4)" in found.reason


def test_16_mixed_below_torch_2_8_lacks_the_grad_scaler_and_suggests_bf16_where_it_works() -> None:
    found = decide("16-mixed", MPS, mac(torch_version=(2, 7), macos=(14, 0)))
    assert found.status == "unavailable"
    assert "torch.amp.GradScaler('mps') needs torch >= 2.8 (this is torch 2.7)" in found.reason
    assert found.reason.endswith("use 'bf16-mixed'")


def test_16_mixed_below_torch_2_8_suggests_32_true_where_bf16_does_not_work_either() -> None:
    found = decide("16-mixed", MPS, mac(torch_version=(2, 7), macos=(13, 6)))
    assert found.reason.endswith("use '32-true'")


@pytest.mark.parametrize("torch_version", [(2, 8), (2, 13), (3, 0)])
def test_16_mixed_is_available_from_torch_2_8(torch_version: tuple[int, int]) -> None:
    assert decide("16-mixed", MPS, mac(torch_version=torch_version, macos=(13, 0))).status == "available"


def test_bf16_mixed_needs_torch_2_6() -> None:
    found = decide("bf16-mixed", MPS, mac(torch_version=(2, 5)))
    assert found.status == "unavailable"
    assert "bfloat16 autocast on MPS needs torch >= 2.6 (this is torch 2.5)" in found.reason


def test_bf16_mixed_needs_macos_14_and_suggests_16_mixed_where_it_works() -> None:
    found = decide("bf16-mixed", MPS, mac(torch_version=(2, 8), macos=(13, 6)))
    assert found.status == "unavailable"
    assert "bfloat16 on MPS needs macOS >= 14.0 (this is macOS 13.6)" in found.reason
    assert found.reason.endswith("use '16-mixed'")


def test_bf16_mixed_on_old_macos_suggests_32_true_below_torch_2_8() -> None:
    found = decide("bf16-mixed", MPS, mac(torch_version=(2, 6), macos=(13, 6)))
    assert found.reason.endswith("use '32-true'")


def test_16_true_is_available_wherever_mps_runs() -> None:
    assert decide("16-true", MPS, mac(torch_version=(2, 4), macos=(13, 0))).status == "available"


def test_bf16_true_needs_macos_14_and_suggests_16_true() -> None:
    found = decide("bf16-true", MPS, mac(macos=(13, 6)))
    assert found.status == "unavailable"
    assert (
        found.reason
        == "bfloat16 tensors on MPS need macOS >= 14.0 (this is macOS 13.6): upgrade macOS, or use '16-true'"
    )


def test_bf16_true_is_available_on_macos_14() -> None:
    assert decide("bf16-true", MPS, mac(macos=(14, 0))).status == "available"


def test_create_a_true_half_precision_converts_modules_without_autocast() -> None:
    created = policy.create(Request("bf16-true", MPS, "mps"))
    assert created.convert_module(torch.nn.Linear(2, 2)).weight.dtype == torch.bfloat16


@pytest.mark.parametrize(("torch_version", "macos"), [((2, 6), (14, 0)), ((2, 13), (26, 0))])
def test_bf16_mixed_is_available_from_torch_2_6_on_macos_14(
    torch_version: tuple[int, int], macos: tuple[int, int]
) -> None:
    assert decide("bf16-mixed", MPS, mac(torch_version, macos)).status == "available"


def auto(found: MPSProbe) -> str:
    """What the core's "auto" picks from these statuses: the first of AUTO_ORDER that is available."""
    return next((p for p in AUTO_ORDER[:-1] if decide(p, MPS, found).status == "available"), AUTO_ORDER[-1])


@pytest.mark.parametrize(
    ("torch_version", "macos", "expected"),
    [
        ((2, 8), (14, 0), "bf16-mixed"),
        ((2, 8), (13, 6), "16-mixed"),
        ((2, 6), (15, 0), "bf16-mixed"),
        ((2, 7), (13, 6), "32-true"),
        ((2, 4), (15, 0), "32-true"),
    ],
)
def test_auto_follows_the_gates(torch_version: tuple[int, int], macos: tuple[int, int], expected: str) -> None:
    assert auto(mac(torch_version, macos)) == expected


# --- reading versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.8.0+cpu", (2, 8)), ("2.13.0", (2, 13)), ("2.9.0.dev20250701", (2, 9)), ("14.5", (14, 5)), ("15", (15, 0))],
)
def test_release_reads_major_and_minor(text: str, expected: tuple[int, int]) -> None:
    assert release(text) == expected


def test_release_of_an_empty_version_is_none() -> None:
    # platform.mac_ver() answers "" off macOS.
    assert release("") is None


SUFFIXES = st.from_regex(r"(\.[0-9]+)?([+a-z][a-z0-9.]*)?", fullmatch=True)


@given(major=st.integers(0, 99), minor=st.integers(0, 99), rest=SUFFIXES)
def test_release_ignores_everything_after_the_minor_version(major: int, minor: int, rest: str) -> None:
    assert release(f"{major}.{minor}{rest}") == (major, minor)


# --- the real probe on this machine -------------------------------------------------------------


def test_the_real_probe_records_torch_macos_and_mps() -> None:
    found = policy.probe()
    assert found.torch_version == release(torch.__version__)
    assert found.macos_version == release(platform.mac_ver()[0])
    assert (found.built, found.available) == (torch.backends.mps.is_built(), torch.backends.mps.is_available())


@not_a_mac
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_here_mps_is_unavailable_because_this_is_not_macos(precision: str) -> None:
    found = policy.availability(precision, MPS)
    assert found.status == "unavailable"
    assert "runs only on macOS" in found.reason


@not_a_mac
def test_here_there_is_no_mps_device() -> None:
    assert policy.device_count() == 0


@not_a_mac
def test_get_precision_on_mps_here_says_why() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match="runs only on macOS"):
        mixprec.get_precision("16-mixed", "mps")


# --- create -------------------------------------------------------------------------------------


def request(precision: str, **options: object) -> Request:
    return Request(precision, MPS, "mps", options=options)


def test_create_bf16_mixed_autocasts_mps_to_bfloat16_without_a_scaler() -> None:
    precision = policy.create(request("bf16-mixed"))
    assert isinstance(precision, Precision)
    assert (precision.precision, precision.device, precision.scaler) == ("bf16-mixed", "mps", None)  # type: ignore[attr-defined]
    context = precision.forward_context()
    assert (context.device, context.fast_dtype) == ("mps", torch.bfloat16)  # type: ignore[attr-defined]


def test_create_16_mixed_has_an_mps_grad_scaler_with_the_given_options() -> None:
    precision = policy.create(request("16-mixed", init_scale=2.0**12, growth_factor=4.0, growth_interval=5))
    scaler = precision.scaler  # type: ignore[attr-defined]
    assert isinstance(scaler, torch.amp.GradScaler)
    assert scaler._device == "mps"
    assert (scaler.get_scale(), scaler.get_growth_factor(), scaler.get_growth_interval()) == (2.0**12, 4.0, 5)
    context = precision.forward_context()
    assert (context.device, context.fast_dtype) == ("mps", torch.float16)  # type: ignore[attr-defined]


def test_create_rejects_an_unknown_scaler_option_naming_the_valid_ones() -> None:
    with pytest.raises(OptionError, match=r"\['scale'\].*'init_scale', 'growth_factor', 'backoff_factor'"):
        policy.create(request("16-mixed", scale=2.0))


def test_create_bf16_mixed_takes_no_scaler_options() -> None:
    with pytest.raises(OptionError, match="takes no options"):
        policy.create(request("bf16-mixed", init_scale=2.0))
