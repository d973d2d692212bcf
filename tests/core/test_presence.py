"""Presence: a device that is not there is never served, whatever a policy answers, and CUDA is never initialised."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
import torch

import mixprec
from tests.core.throwaway import FAKE_DEVICE, install_backend
from tests.distributions import Site

UNAVAILABLE = ("unavailable", "fakeacc driver 0.1 is too old; use '32-true'")

no_cuda = pytest.mark.skipif(torch.cuda.device_count() > 0, reason="a CUDA device is present here")
no_xpu = pytest.mark.skipif(torch.xpu.device_count() > 0, reason="an XPU device is present here")


@no_cuda
def test_auto_on_cuda_without_a_cuda_device_is_an_error_naming_what_is_missing() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match="'auto' has no precision to choose on cuda") as raised:
        mixprec.get_precision("auto", "cuda")

    assert "no cuda device here: " in str(raised.value)


@no_xpu
def test_auto_on_a_device_type_torch_knows_but_that_is_absent_is_an_error() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match=r"no xpu device here: torch\.xpu\.device_count"):
        mixprec.get_precision("auto", "xpu")


@no_xpu
def test_the_cores_true_precisions_on_an_absent_device_type_are_unavailable_with_the_reason() -> None:
    records = {r.precision: r for r in mixprec.available("xpu") if r.backend == "core"}

    assert {r.status for r in records.values()} == {"unavailable"}
    assert records["bf16-true"].reason.startswith("no xpu device here")
    with pytest.raises(mixprec.BackendUnavailableError, match="no xpu device here"):
        mixprec.get_precision("bf16-true", "xpu")


def test_explain_shows_an_absent_device_as_unavailable_and_chooses_nothing() -> None:
    explanation = mixprec.explain("32-true", "cpu:1")

    (core,) = (c for c in explanation.candidates if c.backend == "core")
    assert (core.status, core.chosen) == ("unavailable", False)
    assert core.reason == "cpu:1 does not exist: device_count() of backend 'cpu' is 1 (cpu:0)"
    assert explanation.precision is None
    assert explanation.error is not None


def test_the_cpu_is_present_with_one_device() -> None:
    assert mixprec.get_precision("32-true", "cpu:0").mixprec_backend == "core"
    with pytest.raises(mixprec.BackendUnavailableError, match="cpu:1 does not exist"):
        mixprec.get_precision("32-true", "cpu:1")


def test_a_device_types_backend_counting_no_device_makes_its_usable_answers_unavailable(site: Site) -> None:
    install_backend(site, "acc", device_count=0)

    records = {r.precision: r for r in mixprec.available(FAKE_DEVICE) if r.backend == "acc"}

    assert records["bf16-mixed"].status == "unavailable"
    assert records["bf16-mixed"].reason == "no fakeacc device here: device_count() of backend 'acc' is 0"
    with pytest.raises(mixprec.BackendUnavailableError, match="no fakeacc device here"):
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE)


def test_an_index_past_the_backends_count_does_not_exist(site: Site) -> None:
    install_backend(site, "acc", device_count=2)

    assert mixprec.get_precision("bf16-mixed", f"{FAKE_DEVICE}:1").mixprec_backend == "acc"
    with pytest.raises(mixprec.BackendUnavailableError) as raised:
        mixprec.get_precision("bf16-mixed", f"{FAKE_DEVICE}:2")

    expected = "fakeacc:2 does not exist: device_count() of backend 'acc' is 2 (fakeacc:0 to fakeacc:1)"
    assert expected in str(raised.value)


def test_a_policys_own_unavailable_reason_is_kept_over_the_presence_check(site: Site) -> None:
    install_backend(site, "acc", device_count=0, answers={"bf16-mixed": UNAVAILABLE})

    (record,) = (r for r in mixprec.available(FAKE_DEVICE) if r.precision == "bf16-mixed")

    assert (record.status, record.reason) == UNAVAILABLE


def test_the_cores_precisions_on_a_type_torch_has_no_module_for_are_counted_by_that_types_backends(
    site: Site,
) -> None:
    install_backend(site, "acc", device_count=2)

    assert mixprec.get_precision("32-true", f"{FAKE_DEVICE}:1").mixprec_backend == "core"
    with pytest.raises(mixprec.BackendUnavailableError, match="device_count\\(\\) of backend 'acc' is 2"):
        mixprec.get_precision("32-true", f"{FAKE_DEVICE}:2")


def test_the_cores_precisions_on_a_type_with_a_backend_are_counted_by_the_backend_not_by_torch(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.cuda.device_count() may ask the CUDA driver where NVML cannot be loaded: the type's backend counts first.
    def driver_started() -> int:
        raise AssertionError("torch.cuda.device_count() was called")

    monkeypatch.setattr(torch.cuda, "device_count", driver_started)
    install_backend(site, "nv", device_type="cuda", precisions=("bf16-mixed",), device_count=2)
    monkeypatch.setenv("MIXPREC_PLUGINS", "nv")

    assert mixprec.get_precision("32-true", "cuda:1").mixprec_backend == "core"
    with pytest.raises(
        mixprec.BackendUnavailableError, match="cuda:2 does not exist: device_count\\(\\) of backend 'nv'"
    ):
        mixprec.get_precision("64-true", "cuda:2")


def test_the_cores_precisions_on_a_type_without_a_backend_are_counted_by_torch() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match=r"torch\.xpu\.device_count\(\) is 0 \(torch "):
        mixprec.get_precision("32-true", "xpu")


def test_the_cores_precisions_on_a_type_nobody_counts_are_unavailable_saying_why() -> None:
    with pytest.raises(mixprec.BackendUnavailableError) as raised:
        mixprec.get_precision("32-true", "xla")

    assert "has no device module torch.xla" in str(raised.value)
    assert "no installed backend for device type 'xla' counts them" in str(raised.value)


def test_a_lightning_accelerator_for_an_absent_device_is_an_error() -> None:
    from lightning.fabric.accelerators import CUDAAccelerator

    if torch.cuda.device_count() > 0:
        pytest.skip("a CUDA device is present here")
    with pytest.raises(mixprec.BackendUnavailableError, match="no cuda device here"):
        mixprec.get_precision("32-true", CUDAAccelerator())


def test_presence_is_counted_once_per_registry_generation(site: Site) -> None:
    package = install_backend(site, "acc")

    for _ in range(3):
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE)
        mixprec.get_precision("16-mixed", f"{FAKE_DEVICE}:0")
        mixprec.explain("auto", FAKE_DEVICE)
        mixprec.available(FAKE_DEVICE)

    assert len(importlib.import_module(f"{package}.policy").COUNTED) == 1


def test_a_device_present_for_the_best_device_rule_is_the_one_auto_serves(site: Site) -> None:
    install_backend(site, "acc", device_count=1)

    assert mixprec.get_precision("auto").mixprec_backend == "acc"
    assert mixprec.explain("auto").device == FAKE_DEVICE


@pytest.fixture
def simulated_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two CUDA devices as torch counts them, and a CUDA whose initialisation fails loudly; only the core loaded.

    On a machine without a GPU this is the only way to show that presence is checked without
    initialising CUDA: anything that reaches ``torch.cuda._lazy_init`` fails the test.
    """

    def initialised() -> None:
        raise AssertionError("mixprec initialised CUDA")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "_lazy_init", initialised)
    monkeypatch.setenv("MIXPREC_PLUGINS", "")
    yield
    assert not torch.cuda.is_initialized()


@pytest.mark.usefixtures("simulated_cuda")
def test_presence_on_cuda_is_counted_by_torch_without_initialising_cuda() -> None:
    assert mixprec.get_precision("32-true", "cuda:1").mixprec_backend == "core"
    assert mixprec.explain("auto", "cuda").precision == "32-true"
    assert {r.status for r in mixprec.available("cuda:1")} == {"available"}
    with pytest.raises(mixprec.BackendUnavailableError) as raised:
        mixprec.get_precision("32-true", "cuda:2")

    assert "cuda:2 does not exist: torch.cuda.device_count() is 2 (cuda:0 to cuda:1)" in str(raised.value)
