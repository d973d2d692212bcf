"""The inputs get_precision accepts: precision strings and Lightning's aliases; devices in every form."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.accelerators import CPUAccelerator as FabricCPUAccelerator
from lightning.fabric.accelerators import CUDAAccelerator as FabricCUDAAccelerator
from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR_ALIAS_CONVERSION as LIGHTNING_ALIASES
from lightning.pytorch.accelerators import CPUAccelerator as TrainerCPUAccelerator
from lightning.pytorch.accelerators import CUDAAccelerator as TrainerCUDAAccelerator

import mixprec
from mixprec._resolver import STANDARD_PRECISIONS
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
@pytest.mark.parametrize("name", STANDARD_PRECISIONS)
def test_canonical_precision_resolves_to_itself(name: str) -> None:
    assert mixprec.get_precision(name, FAKE_DEVICE).precision == name


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
