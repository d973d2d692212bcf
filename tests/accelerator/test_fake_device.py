"""mixprec on a fourth device type, the fake PrivateUse1 device: discovery, resolution, "auto", explain and list."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

import mixprec
from mixprec_accelerator.policy import device_types, probe
from tests.accelerator.vendor_policy import VendorPlugin


def test_torch_accelerator_reports_the_fake_device(fake_device: ModuleType) -> None:
    assert torch.accelerator.current_accelerator() == torch.device(fake_device.NAME)
    assert torch.accelerator.device_count() == fake_device.COUNT
    assert device_types() == (fake_device.NAME,)


def test_the_grad_scaler_kernels_are_found_on_the_fake_device(fake_device: ModuleType) -> None:
    found = probe(fake_device.NAME)
    assert (found.dispatch_key, found.missing_kernels, found.autocast) == ("PrivateUse1", (), True)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)])
def test_mixed_precision_autocasts_on_the_fake_device(
    fake_device: ModuleType, precision: str, dtype: torch.dtype
) -> None:
    p = mixprec.get_precision(precision, fake_device.NAME)
    layer = torch.nn.Linear(4, 2).to(fake_device.NAME)
    with p.forward_context():
        out = layer(torch.randn(3, 4, device=fake_device.NAME))
    assert (p.mixprec_backend, p.device, out.dtype, out.device.type) == ("accelerator", "fakedev", dtype, "fakedev")


def test_16_mixed_has_a_grad_scaler_on_the_fake_device(fake_device: ModuleType) -> None:
    p = mixprec.get_precision("16-mixed", fake_device.NAME, init_scale=2.0**10)
    assert p.scaler is not None
    assert p.scaler._device == fake_device.NAME
    assert p.scaler.get_scale() == 2.0**10


def test_auto_picks_bf16_mixed_on_the_fake_device(fake_device: ModuleType) -> None:
    assert mixprec.get_precision("auto", fake_device.NAME).precision == "bf16-mixed"


def test_the_best_device_present_is_the_fake_device(fake_device: ModuleType) -> None:
    explanation = mixprec.explain("auto")
    assert explanation.device == fake_device.NAME


def test_explain_names_the_backend_and_that_native_speed_is_unknown(fake_device: ModuleType) -> None:
    text = str(mixprec.explain("bf16-mixed", fake_device.NAME))
    assert "accelerator" in text
    assert "native speed unknown: run mixprec bench" in text


def test_a_fake_device_index_past_the_count_is_absent(fake_device: ModuleType) -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match=r"fakedev:2 does not exist"):
        mixprec.get_precision("bf16-mixed", f"{fake_device.NAME}:2")


def test_list_shows_every_precision_of_the_backend_on_the_fake_device(fake_device: ModuleType) -> None:
    rows = {r.precision: r.status for r in mixprec.available() if r.backend == "accelerator"}
    assert rows == dict.fromkeys(("bf16-mixed", "16-mixed", "bf16-true", "16-true"), "available")
    assert {r.device_type for r in mixprec.available() if r.backend == "accelerator"} == {fake_device.NAME}


def test_a_vendor_backend_for_the_device_type_wins(fake_device: ModuleType) -> None:
    mixprec.register(VendorPlugin(), "fakevendor")
    assert mixprec.get_precision("bf16-mixed", fake_device.NAME).mixprec_backend == "fakevendor"
    # mixprec-accelerator still serves what the vendor's backend does not offer.
    assert mixprec.get_precision("16-mixed", fake_device.NAME).mixprec_backend == "accelerator"


def test_tune_measures_the_model_on_the_fake_device(fake_device: ModuleType) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    example = torch.randn(4, 8)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    result = mixprec.tune(model, example, device=fake_device.NAME, budget_s=20.0, steps=6, refresh=True)

    measured = {m.precision: m for m in result.measurements}
    assert set(measured) == {"32-true", "bf16-mixed", "16-mixed"}
    assert {m.backend for m in measured.values() if m.precision != "32-true"} == {"accelerator"}
    assert all(m.finite and m.steps >= 3 for m in measured.values())
    assert result.device == fake_device.NAME
    assert result.precision in measured
    chosen = result.precision_object()
    assert (chosen.precision, getattr(chosen, "device", fake_device.NAME)) == (result.precision, fake_device.NAME)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
