"""The inputs get_precision accepts: precision strings and Lightning's aliases; devices in every form."""

from __future__ import annotations

import enum

import pytest
import torch
from lightning.fabric.accelerators import CPUAccelerator as FabricCPUAccelerator
from lightning.fabric.accelerators import CUDAAccelerator as FabricCUDAAccelerator
from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR_ALIAS_CONVERSION as LIGHTNING_ALIASES
from lightning.pytorch.accelerators import CPUAccelerator as TrainerCPUAccelerator
from lightning.pytorch.accelerators import CUDAAccelerator as TrainerCUDAAccelerator

import mixprec
from mixprec._inputs import STANDARD_PRECISIONS
from tests.core.throwaway import FAKE_DEVICE, install_backend
from tests.distributions import Site


@pytest.fixture
def acc(site: Site) -> str:
    """A backend offering both mixed precisions on FAKE_DEVICE, available."""
    return install_backend(site, "acc")


@pytest.mark.usefixtures("acc")
@pytest.mark.parametrize("alias", [16, "16", "bf16", 32, "32", 64, "64"], ids=repr)
def test_lightning_alias_resolves_to_the_precision_lightning_means(alias: int | str) -> None:
    precision = mixprec.get_precision(alias, FAKE_DEVICE)

    assert precision.precision == LIGHTNING_ALIASES[str(alias)]


@pytest.mark.usefixtures("acc")
@pytest.mark.parametrize("name", [p for p in STANDARD_PRECISIONS if p != "fp8-mixed"])
def test_canonical_precision_resolves_to_itself(name: str) -> None:
    assert mixprec.get_precision(name, FAKE_DEVICE).precision == name


def test_standard_precisions_are_those_the_core_fixes_contracts_for_fp8_mixed_included() -> None:
    assert tuple(mixprec.STANDARD_CONTRACTS) == STANDARD_PRECISIONS
    assert "fp8-mixed" in STANDARD_PRECISIONS


class CustomCPUAccelerator(FabricCPUAccelerator):
    """A user's subclass of a registered accelerator: it keeps its parent's device type."""


DEVICES = {
    "str": ("cpu", "cpu"),
    "str-with-index": ("cpu:0", "cpu:0"),
    "torch-device": (torch.device("cpu"), "cpu"),
    "torch-device-with-index": (torch.device("cpu", 0), "cpu:0"),
    "fabric-cpu-accelerator": (FabricCPUAccelerator(), "cpu"),
    "trainer-cpu-accelerator": (TrainerCPUAccelerator(), "cpu"),
    "accelerator-subclass": (CustomCPUAccelerator(), "cpu"),
    "fabric-cuda-accelerator": (FabricCUDAAccelerator(), "cuda"),
    "trainer-cuda-accelerator": (TrainerCUDAAccelerator(), "cuda"),
}


@pytest.mark.parametrize("case", DEVICES, ids=list(DEVICES))
def test_device_in_every_form_resolves_to_its_device(case: str) -> None:
    value, expected = DEVICES[case]

    assert mixprec.explain("32-true", value).device == expected


@pytest.mark.parametrize("case", [c for c, (_, device) in DEVICES.items() if device.startswith("cpu")])
def test_device_in_every_form_is_served_where_it_is_present(case: str) -> None:
    value, _ = DEVICES[case]

    assert mixprec.get_precision("32-true", value).mixprec_backend == "core"


@pytest.mark.parametrize("device", [None, "auto"])
def test_no_device_means_the_accelerator_that_is_present(
    site: Site, monkeypatch: pytest.MonkeyPatch, device: str | None
) -> None:
    install_backend(site, "acc", device_count=1)
    monkeypatch.setenv("MIXPREC_PLUGINS", "acc,cpu")

    assert mixprec.explain("bf16-mixed", device).device == FAKE_DEVICE
    assert mixprec.get_precision("bf16-mixed", device).mixprec_backend == "acc"


@pytest.mark.parametrize("device", [None, "auto"])
def test_no_device_means_the_cpu_when_no_accelerator_is_present(
    site: Site, monkeypatch: pytest.MonkeyPatch, device: str | None
) -> None:
    install_backend(site, "acc", device_count=0)
    monkeypatch.setenv("MIXPREC_PLUGINS", "acc,cpu")

    assert mixprec.explain("32-true", device).device == "cpu"


def test_accelerators_that_are_present_rank_by_their_best_backends_priority(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_backend(site, "one", device_type="accone", device_count=1, priority=1)
    install_backend(site, "two", device_type="acctwo", device_count=1, priority=2)
    install_backend(site, "two-low", device_type="acctwo", device_count=1, priority=0)
    monkeypatch.setenv("MIXPREC_PLUGINS", "one,two,two-low")

    assert mixprec.explain("32-true").device == "acctwo"


class Bits(enum.IntEnum):
    HALF = 16
    FULL = 32
    DOUBLE = 64


class Liar(int):
    """An int subclass that claims to equal everything, hashes alike and prints as something else."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "sixteen"

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "expected"), [(Bits.HALF, "16-mixed"), (Bits.FULL, "32-true"), (Bits.DOUBLE, "64-true")]
)
def test_an_int_enum_member_is_the_precision_of_its_value(value: Bits, expected: str) -> None:
    assert mixprec.explain(value, "cpu").precision == expected
    assert mixprec.get_precision(value, "cpu").precision == expected


def test_an_int_subclass_is_taken_by_its_value_and_cannot_share_a_cached_answer() -> None:
    assert mixprec.get_precision(Liar(64), "cpu").precision == "64-true"
    assert mixprec.get_precision(Liar(32), "cpu").precision == "32-true"
    with pytest.raises(mixprec.UnknownPrecisionError, match="Unknown precision 8"):
        mixprec.get_precision(Liar(8), "cpu")


def test_a_str_subclass_is_taken_by_its_value_and_cannot_share_a_cached_answer() -> None:
    class Loose(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 0

    assert mixprec.get_precision(Loose("64-true"), Loose("cpu")).precision == "64-true"
    assert mixprec.get_precision(Loose("32-true"), Loose("cpu")).precision == "32-true"
