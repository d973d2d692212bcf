"""mixprec-cuda's policy and objects.

The seam: ``mixprec_cuda.policy.decide(precision, device, CUDAProbe)`` is a pure function of a
probe result. Tests for GPUs this machine lacks hand ``decide`` a ``CUDAProbe`` made here (the
``gpus`` helper); nothing in torch is patched. The real ``probe()`` runs too: on a CPU build of
torch it must report that torch was built without CUDA, and on a GPU machine it must agree with
torch. ``create`` builds real objects without a GPU (torch disables a CUDA GradScaler and CUDA
autocast when there is no GPU, with a warning that these tests silence); what needs a GPU is
skipped without one.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from lightning.fabric.plugins.precision import Precision

import mixprec
from mixprec import AUTO_ORDER, Device, OptionError, PrecisionError, Request
from mixprec.precision import MIXED_DTYPES, HalfTruePrecision
from mixprec_cuda import policy
from mixprec_cuda.policy import GPU, CUDAProbe, decide
from tests.distributions import Site

NO_CUDA_WARNING = r"ignore:.*CUDA is not available.*:UserWarning"
cpu_build_only = pytest.mark.skipif(torch.version.cuda is not None, reason="torch here is built with CUDA")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
#: Clipping before the step of an optimizer that unscales inside step() is refused with one of these.


def gpus(*capabilities: tuple[int, int], current: int = 0) -> CUDAProbe:
    """A CUDA 12.4 build of torch seeing one GPU per capability."""
    devices = tuple(GPU(f"GPU {major}.{minor}", f"sm_{major}{minor}", (major, minor)) for major, minor in capabilities)
    return CUDAProbe("2.13.0", "12.4", devices=devices, current_device=current)


CUDA = Device("cuda")
AMPERE, TURING, PASCAL = (8, 0), (7, 5), (6, 1)


# --- decide: every branch ---------------------------------------------------------------------


def test_a_precision_the_backend_does_not_offer_is_unavailable() -> None:
    found = decide("64-true", CUDA, gpus(AMPERE))
    assert found.status == "unavailable"
    assert "does not offer '64-true'" in found.reason


@pytest.mark.parametrize(
    ("precision", "capability", "status"),
    [
        ("bf16-true", AMPERE, "available"),
        ("bf16-true", TURING, "unavailable"),
        ("16-true", TURING, "available"),
        ("16-true", PASCAL, "slow"),
    ],
)
def test_a_true_half_precision_has_the_status_of_its_dtype(
    precision: str, capability: tuple[int, int], status: str
) -> None:
    assert decide(precision, CUDA, gpus(capability)).status == status


def test_bf16_true_on_sm75_suggests_16_true() -> None:
    assert decide("bf16-true", CUDA, gpus(TURING)).reason == "CUDA device 0 is sm_75 and has no bfloat16; use '16-true'"


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_torch_built_without_cuda_is_unavailable_and_says_so(precision: str) -> None:
    found = decide(precision, CUDA, CUDAProbe("2.13.0+cpu", cuda_version=None))
    assert found.status == "unavailable"
    assert "torch 2.13.0+cpu was built without CUDA" in found.reason
    assert "install a CUDA build of torch" in found.reason


def test_a_cuda_build_that_sees_no_gpu_is_unavailable_and_points_at_the_driver() -> None:
    found = decide("16-mixed", CUDA, CUDAProbe("2.13.0", "12.4"))
    assert found.status == "unavailable"
    assert "built with CUDA 12.4" in found.reason
    assert "sees no CUDA device" in found.reason
    assert "CUDA_VISIBLE_DEVICES" in found.reason


def test_a_driver_error_while_probing_is_unavailable_with_the_error() -> None:
    found = decide("bf16-mixed", CUDA, CUDAProbe("2.13.0", "12.4", error="CUDA driver version is insufficient"))
    assert found.status == "unavailable"
    assert found.reason == "CUDA failed to initialise: CUDA driver version is insufficient"


def test_an_index_out_of_range_is_unavailable_and_counts_the_devices() -> None:
    found = decide("bf16-mixed", Device("cuda", 3), gpus(AMPERE, AMPERE))
    assert found.status == "unavailable"
    assert found.reason == "cuda:3 does not exist: 2 CUDA devices (cuda:0 to cuda:1)"


def test_an_index_out_of_range_with_one_gpu_names_the_only_device() -> None:
    found = decide("16-mixed", Device("cuda", 1), gpus(AMPERE))
    assert found.reason == "cuda:1 does not exist: 1 CUDA device (cuda:0)"


def test_bf16_mixed_is_available_on_sm80() -> None:
    found = decide("bf16-mixed", CUDA, gpus(AMPERE))
    assert found.status == "available"
    assert "sm_80 and computes bfloat16 natively" in found.reason


def test_bf16_mixed_on_sm75_is_unavailable_and_suggests_16_mixed() -> None:
    found = decide("bf16-mixed", CUDA, gpus(TURING))
    assert found.status == "unavailable"
    assert found.reason == "CUDA device 0 is sm_75 and has no bfloat16; use '16-mixed'"


def test_bf16_mixed_below_sm70_is_unavailable_and_suggests_32_true() -> None:
    found = decide("bf16-mixed", CUDA, gpus(PASCAL))
    assert found.status == "unavailable"
    assert found.reason.startswith("CUDA device 0 is sm_61 and has no bfloat16; use '32-true'")


def test_bf16_mixed_is_available_on_every_rocm_gpu() -> None:
    rocm = CUDAProbe("2.13.0", None, hip_version="6.2", devices=(GPU("AMD Instinct MI250X", "gfx90a", (9, 0)),))
    found = decide("bf16-mixed", CUDA, rocm)
    assert found.status == "available"
    assert "gfx90a" in found.reason


def test_a_rocm_build_that_sees_no_gpu_names_rocm() -> None:
    found = decide("bf16-mixed", CUDA, CUDAProbe("2.13.0", None, hip_version="6.2"))
    assert "built with ROCm 6.2" in found.reason
    assert "HIP_VISIBLE_DEVICES" in found.reason


@pytest.mark.parametrize("capability", [(7, 0), TURING, AMPERE, (9, 0)])
def test_16_mixed_is_available_where_the_gpu_has_tensor_cores(capability: tuple[int, int]) -> None:
    found = decide("16-mixed", CUDA, gpus(capability))
    assert found.status == "available"
    assert "float16 tensor cores" in found.reason


def test_16_mixed_below_sm70_is_slow_for_lack_of_tensor_cores() -> None:
    found = decide("16-mixed", CUDA, gpus(PASCAL))
    assert found.status == "slow"
    assert "sm_61 and has no tensor cores" in found.reason


def test_an_explicit_index_is_checked_on_that_device() -> None:
    found = gpus(AMPERE, TURING)
    assert decide("bf16-mixed", Device("cuda", 0), found).status == "available"
    assert decide("bf16-mixed", Device("cuda", 1), found).reason.startswith("CUDA device 1 is sm_75")


def test_no_index_is_checked_on_the_current_device() -> None:
    found = gpus(AMPERE, TURING, current=1)
    assert decide("bf16-mixed", CUDA, found).reason.startswith("CUDA device 1 is sm_75")


# --- what "auto" makes of it --------------------------------------------------------------------


def auto(found: CUDAProbe) -> str:
    """What the core's "auto" picks from these statuses: the first of AUTO_ORDER that is available."""
    return next((p for p in AUTO_ORDER[:-1] if decide(p, CUDA, found).status == "available"), AUTO_ORDER[-1])


@given(major=st.integers(3, 12), minor=st.integers(0, 9))
def test_auto_statuses_give_bf16_on_sm80_and_up_16_on_sm70_to_75_and_32_true_below(major: int, minor: int) -> None:
    expected = "bf16-mixed" if (major, minor) >= AMPERE else "16-mixed" if major == 7 else "32-true"
    assert auto(gpus((major, minor))) == expected


FIXED_PLUGIN = """
from mixprec import Backend, hookimpl

@hookimpl
def mixprec_backends():
    return [Backend("fixed-gpu", "cuda", ("bf16-mixed", "16-mixed"), "fixed_gpu.policy", priority=10)]
"""

FIXED_POLICY = """
from mixprec_cuda.policy import GPU, CUDAProbe, create, decide

PROBE = CUDAProbe("2.13.0", "12.4", devices=(GPU("GPU", "sm_{0}{1}", ({0}, {1})),))

def availability(precision, device):
    return decide(precision, device, PROBE)

def device_count():
    return 1
"""


@pytest.mark.filterwarnings(NO_CUDA_WARNING)
@pytest.mark.parametrize(
    ("capability", "expected"),
    [(AMPERE, "bf16-mixed"), (TURING, "16-mixed"), ((7, 0), "16-mixed"), (PASCAL, "32-true")],
)
def test_get_precision_auto_on_a_gpu_of_this_capability(site: Site, capability: tuple[int, int], expected: str) -> None:
    # A real installed plugin whose policy is mixprec-cuda's decide() and create() over a fixed probe.
    site.install(
        "fixed-gpu",
        entry_points={"fixed-gpu": "fixed_gpu"},
        modules={"fixed_gpu": FIXED_PLUGIN, "fixed_gpu.policy": FIXED_POLICY.format(*capability)},
    )
    assert mixprec.get_precision("auto", "cuda", backend="fixed-gpu").precision == expected


# --- the real probe on this machine -------------------------------------------------------------


def test_the_real_probe_agrees_with_torch() -> None:
    found = policy.probe()
    assert (found.torch_version, found.cuda_version, found.hip_version) == (
        torch.__version__,
        torch.version.cuda,
        torch.version.hip,
    )
    assert [gpu.capability for gpu in found.devices] == [
        torch.cuda.get_device_capability(i) for i in range(len(found.devices))
    ]


def test_device_count_is_torchs() -> None:
    assert policy.device_count() == torch.cuda.device_count()


@cpu_build_only
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_here_both_precisions_are_unavailable_because_torch_has_no_cuda(precision: str) -> None:
    found = policy.availability(precision, CUDA)
    assert found.status == "unavailable"
    assert "was built without CUDA" in found.reason
    assert policy.device_count() == 0


@cpu_build_only
def test_get_precision_on_cuda_here_names_the_torch_build() -> None:
    with pytest.raises(mixprec.BackendUnavailableError, match="built without CUDA"):
        mixprec.get_precision("bf16-mixed", "cuda:1")


@needs_gpu
def test_on_this_gpu_bf16_mixed_is_available_exactly_where_torch_computes_bf16_natively() -> None:
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert (policy.availability("bf16-mixed", CUDA).status == "available") == native


# --- create -------------------------------------------------------------------------------------


def request(precision: str, **options: object) -> Request:
    return Request(precision, Device("cuda", 1), "cuda", options=options)


@pytest.mark.filterwarnings(NO_CUDA_WARNING)
def test_create_bf16_mixed_autocasts_cuda_to_bfloat16_without_a_scaler() -> None:
    precision = policy.create(request("bf16-mixed"))
    assert isinstance(precision, Precision)
    assert (precision.precision, precision.device, precision.scaler) == ("bf16-mixed", "cuda", None)  # type: ignore[attr-defined]
    context = precision.forward_context()
    assert (context.device, context.fast_dtype) == ("cuda", torch.bfloat16)  # type: ignore[attr-defined]


@pytest.mark.filterwarnings(NO_CUDA_WARNING)
def test_create_16_mixed_has_a_cuda_grad_scaler_and_autocasts_to_float16() -> None:
    precision = policy.create(request("16-mixed"))
    scaler = precision.scaler  # type: ignore[attr-defined]
    assert isinstance(scaler, torch.amp.GradScaler)
    assert scaler._device == "cuda"
    context = precision.forward_context()
    assert (context.device, context.fast_dtype) == ("cuda", torch.float16)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_create_a_true_half_precision_converts_modules_without_autocast_or_scaler(
    precision: str, dtype: torch.dtype
) -> None:
    created = policy.create(request(precision))
    assert isinstance(created, HalfTruePrecision)
    assert created.convert_module(torch.nn.Linear(2, 2)).weight.dtype == dtype


@pytest.mark.filterwarnings(NO_CUDA_WARNING)
def test_create_for_the_trainer_returns_a_trainer_precision_on_cuda() -> None:
    from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

    precision = policy.create(Request("16-mixed", CUDA, "cuda", target="trainer"))
    assert isinstance(precision, TrainerPrecision)
    assert precision.device == "cuda"  # type: ignore[attr-defined]


def test_create_rejects_an_unknown_scaler_option_naming_the_valid_ones() -> None:
    with pytest.raises(OptionError, match=r"\['init_scal'\].*'init_scale', 'growth_factor', 'backoff_factor'"):
        policy.create(request("16-mixed", init_scal=1024.0))


def test_create_bf16_mixed_takes_no_scaler_options() -> None:
    with pytest.raises(OptionError, match="takes no options"):
        policy.create(request("bf16-mixed", growth_interval=10))


@pytest.mark.filterwarnings(NO_CUDA_WARNING)
def test_clipping_before_a_fused_optimizer_step_is_a_clear_error() -> None:
    precision = policy.create(request("16-mixed"))
    fused = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), fused=True)
    with pytest.raises(PrecisionError, match="unscales its gradients inside step"):
        precision.unscale_gradients(fused)


@needs_gpu
def test_grad_scaler_options_reach_the_cuda_scaler() -> None:
    precision = mixprec.get_precision("16-mixed", "cuda", init_scale=256.0, growth_interval=7)
    assert precision.scaler.get_scale() == 256.0  # type: ignore[attr-defined]
    assert precision.scaler.get_growth_interval() == 7  # type: ignore[attr-defined]


@needs_gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_a_training_step_on_the_gpu_updates_the_weights(precision: str) -> None:
    from lightning.fabric import Fabric

    if policy.availability(precision, CUDA).status != "available":
        pytest.skip(policy.availability(precision, CUDA).reason)
    fabric = Fabric(accelerator="cuda", devices=1, plugins=[mixprec.get_precision(precision, "cuda")])
    model = torch.nn.Linear(16, 4)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    with fabric.autocast():
        out = model.module(torch.randn(8, 16, device=fabric.device))
    assert out.dtype == MIXED_DTYPES[precision]
    fabric.backward(out.float().pow(2).mean())
    optimizer.step()
    assert not torch.equal(model.weight, before)


@needs_gpu
def test_a_fused_optimizer_steps_through_the_cuda_scaler_and_refuses_clipping() -> None:
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cuda", devices=1, plugins=[mixprec.get_precision("16-mixed", "cuda")])
    model = torch.nn.Linear(16, 4)
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), fused=True))
    before = model.weight.detach().clone()
    with fabric.autocast():
        loss = model(torch.randn(8, 16, device=fabric.device)).float().pow(2).mean()
    fabric.backward(loss)
    with pytest.raises(PrecisionError, match="unscales its gradients inside step"):
        fabric.clip_gradients(model, optimizer, max_norm=1.0)
    optimizer.step()
    assert not torch.equal(model.weight, before)
