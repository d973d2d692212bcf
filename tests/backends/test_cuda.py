"""mixprec-cuda's policy and objects.

The seam: ``mixprec_cuda.policy.decide(precision, device, CUDAProbe)`` is a pure function of a
probe result. Tests for GPUs this machine lacks hand ``decide`` a ``CUDAProbe`` made here (the
``gpus`` helper). The probe itself, and the promise that nothing mixprec does starts CUDA, are
tested on a simulated CUDA machine (``machine``, see tests/backends/simulated_cuda.py): torch's
ways into CUDA are tripwires, and a fake NVML answers for the GPUs, because the real one cannot
run here. The real ``probe()`` runs too: on a CPU build of torch it must report that torch was
built without CUDA, and on a GPU machine it must agree with torch. ``create`` builds real objects
without a GPU (torch disables a CUDA GradScaler and CUDA autocast when there is no GPU, with a
warning that these tests silence); what needs a GPU is skipped without one.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType, SimpleNamespace

import pynvml  # type: ignore[import-untyped]
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from lightning.fabric.plugins.precision import HalfPrecision, Precision

import mixprec
from mixprec import AUTO_ORDER, Device, OptionError, PrecisionError, Request
from mixprec.precision import MIXED_DTYPES
from mixprec.probes._visible import Visible, visible
from mixprec_cuda import policy
from mixprec_cuda.policy import GPU, CUDAProbe, decide
from tests.backends.simulated_cuda import Card, CUDAStarted, Simulation, cards_of, simulate
from tests.cli_runs import run_cli
from tests.distributions import Site

NO_CUDA_WARNING = r"ignore:.*CUDA is not available.*:UserWarning"
cpu_build_only = pytest.mark.skipif(torch.version.cuda is not None, reason="torch here is built with CUDA")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def gpus(*capabilities: tuple[int, int], current: int = 0) -> CUDAProbe:
    """A CUDA 12.4 build of torch seeing one GPU per capability."""
    devices = tuple(GPU(f"GPU {major}.{minor}", (major, minor)) for major, minor in capabilities)
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


def test_a_probe_that_could_not_read_the_gpus_is_unavailable_with_its_reason() -> None:
    found = decide("bf16-mixed", CUDA, CUDAProbe("2.13.0", "12.4", error="NVML failed to start: check nvidia-smi"))
    assert found.status == "unavailable"
    assert found.reason == "NVML failed to start: check nvidia-smi"


def test_gpus_whose_numbering_is_unknown_are_unavailable_with_the_reason() -> None:
    unordered = replace(gpus(AMPERE, TURING), unordered="set CUDA_DEVICE_ORDER=PCI_BUS_ID")
    assert decide("16-mixed", Device("cuda", 1), unordered).reason == "set CUDA_DEVICE_ORDER=PCI_BUS_ID"


def test_a_cuda_gpu_of_unknown_compute_capability_is_never_judged_available() -> None:
    unknown = CUDAProbe("2.13.0", "12.4", devices=(GPU("GPU", None),))
    assert decide("16-mixed", CUDA, unknown).status == "unavailable"


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


@pytest.mark.parametrize("precision", sorted(policy.OFFERED))
@pytest.mark.parametrize("gpu", [GPU("AMD Instinct MI250X", None, gfx="gfx90a"), GPU(None, None)])
def test_every_precision_is_available_on_every_rocm_gpu(precision: str, gpu: GPU) -> None:
    found = decide(precision, CUDA, CUDAProbe("2.13.0", None, hip_version="6.2", devices=(gpu,)))
    assert found.status == "available"
    assert "is a ROCm GPU" in found.reason


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

PROBE = CUDAProbe("2.13.0", "12.4", devices=(GPU("GPU", ({0}, {1})),))

def availability(precision, device):
    return decide(precision, device, PROBE)

def device_count():
    return 1
"""


@pytest.mark.parametrize(
    ("capability", "expected"),
    [(AMPERE, "bf16-mixed"), (TURING, "16-mixed"), ((7, 0), "16-mixed"), (PASCAL, "32-true")],
)
def test_get_precision_auto_on_a_gpu_of_this_capability(
    site: Site, machine: Callable[..., Simulation], capability: tuple[int, int], expected: str
) -> None:
    # A real installed plugin whose policy is mixprec-cuda's decide() and create() over a fixed probe; the
    # simulated machine has that GPU, for the core's "32-true", which asks torch whether a device is there.
    machine(cards_of(capability))
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


# --- the probe on a simulated CUDA machine: the GPUs read through NVML, never through CUDA -------

H100 = Card("NVIDIA H100 80GB HBM3", (9, 0), "GPU-6a1e0c34-aaaa-bbbb-cccc-000000000001")
MIG_H100 = Card(
    "NVIDIA H100 80GB HBM3",
    (9, 0),
    "GPU-6a1e0c34-aaaa-bbbb-cccc-000000000002",
    mig=(("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "MIG-11111111-aaaa"), ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "MIG-2222")),
)
T4 = Card("Tesla T4", (7, 5), "GPU-0b1c2d3e-aaaa-bbbb-cccc-000000000003")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Simulation]:
    """Makes this process a CUDA build of torch on a simulated machine (see tests/backends/simulated_cuda.py)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    return functools.partial(simulate, monkeypatch)


def test_the_probe_reads_each_gpus_name_capability_and_uuid_from_nvml(machine: Callable[..., Simulation]) -> None:
    machine([H100, H100])
    found = policy.probe()
    assert found.devices == (GPU(H100.name, (9, 0), uuid=H100.uuid),) * 2
    assert (found.error, found.unordered, found.current_device) == (None, None, 0)


def test_the_device_count_is_nvmls_and_torchs(machine: Callable[..., Simulation]) -> None:
    machine([H100, H100, H100])
    assert policy.device_count() == torch.cuda.device_count() == 3


def test_cuda_visible_devices_numbers_the_gpus_as_cuda_does(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine([H100, T4])
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert [gpu.name for gpu in policy.probe().devices] == ["Tesla T4", H100.name]
    assert (
        policy.availability("bf16-mixed", CUDA).reason == "CUDA device 0 is sm_75 and has no bfloat16; use '16-mixed'"
    )


def test_a_cuda_visible_devices_that_hides_every_gpu_is_named_in_the_reason(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine([H100])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert policy.device_count() == 0
    assert policy.availability("16-mixed", CUDA).reason.endswith("does not hide every GPU (it is '')")


UUIDS = ("GPU-0a", "GPU-0b", "GPU-1c")


@pytest.mark.parametrize(
    ("value", "ordinals"),
    [
        (None, (0, 1, 2)),
        ("", ()),
        ("2,0", (2, 0)),
        ("0,2,-1,1", (0, 2)),  # the first invalid entry ends the list
        ("0,7,1", (0,)),  # so does a GPU that is not there
        (" 1gpu,+0", (1, 0)),  # each entry is read as C's strtoul reads it
        ("1,x,0", (1,)),
        ("0,1,0", ()),  # a GPU named twice hides them all
        ("-", ()),
        ("GPU-1", (2,)),  # a unique UUID prefix
        ("GPU-0b,GPU-0a", (1, 0)),
        ("GPU-0", ()),  # a prefix of two UUIDs names none
        ("GPU-1c,1", (2,)),  # the list's kind is the first entry's
        ("GPU-0a,GPU-0a", ()),
    ],
)
def test_cuda_visible_devices_is_read_by_torchs_rules(value: str | None, ordinals: tuple[int, ...]) -> None:
    assert visible(value, UUIDS).ordinals == ordinals


def test_mig_uuids_in_cuda_visible_devices_name_mig_instances() -> None:
    assert visible("MIG-2,MIG-1", UUIDS, ["MIG-1", "MIG-2"]) == Visible("mig", (1, 0))


ENTRY = st.one_of(
    st.integers(-2, 4).map(str),
    st.sampled_from(["+1", " 2", "1gpu", "x", "", "GPU-", "GPU-00000000", "GPU-0000000"]),
    st.builds(lambda card, length: f"GPU-0000000{card}"[:length], st.integers(0, 3), st.integers(4, 13)),
)


@given(entries=st.none() | st.lists(ENTRY, max_size=5), order=st.sampled_from([None, "PCI_BUS_ID"]))
def test_the_gpus_counted_and_numbered_are_torchs_for_any_cuda_visible_devices(
    entries: list[str] | None, order: str | None
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        found = cards_of((9, 0), (8, 0), (7, 5), (8, 6))
        simulate(patch, found)
        for name, value in (("CUDA_VISIBLE_DEVICES", entries), ("CUDA_DEVICE_ORDER", order)):
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value if isinstance(value, str) else ",".join(value))
        devices = policy.probe().devices
        assert len(devices) == policy.device_count() == torch.cuda.device_count()
        # torch's own map from its device index to NVML's.
        assert [gpu.uuid for gpu in devices] == [
            found[torch.cuda._get_nvml_device_index(i)].uuid for i in range(len(devices))
        ]


def test_a_mig_instance_named_in_cuda_visible_devices_is_the_one_device(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine([H100, MIG_H100])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-2222,MIG-1111")  # CUDA shows a process one MIG instance
    instance = GPU("NVIDIA H100 80GB HBM3 MIG 3g.40gb", (9, 0), uuid="MIG-2222")
    assert policy.probe().devices == (instance,)
    assert policy.availability("bf16-mixed", CUDA).reason.startswith(
        "CUDA device 0 (NVIDIA H100 80GB HBM3 MIG 3g.40gb)"
    )


def test_a_gpu_in_mig_mode_is_its_first_instance_when_none_is_named(machine: Callable[..., Simulation]) -> None:
    machine([MIG_H100, H100, MIG_H100])
    assert [gpu.uuid for gpu in policy.probe().devices] == ["MIG-11111111-aaaa", H100.uuid]


def test_gpus_that_differ_are_unavailable_while_cudas_numbering_of_them_is_unknown(
    machine: Callable[..., Simulation],
) -> None:
    machine([H100, T4])
    found = policy.availability("16-mixed", Device("cuda", 1))
    assert found.status == "unavailable"
    assert "CUDA numbers them fastest first" in found.reason
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in found.reason
    assert policy.device_count() == 2


@pytest.mark.parametrize(
    ("name", "value"), [("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", "GPU-0b1c,GPU-6a")]
)
def test_gpus_that_differ_are_judged_once_their_numbering_is_known(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    machine([H100, T4])
    monkeypatch.setenv(name, value)
    t4 = 1 if name == "CUDA_DEVICE_ORDER" else 0
    assert policy.availability("bf16-mixed", Device("cuda", t4)).status == "unavailable"
    assert policy.availability("bf16-mixed", Device("cuda", 1 - t4)).status == "available"


def test_without_the_nvml_library_every_precision_is_unavailable_saying_what_to_do(
    machine: Callable[..., Simulation],
) -> None:
    sim = machine([H100], nvml=False)  # the real pynvml, with no libnvidia-ml.so.1 to load
    for precision in policy.OFFERED:
        found = policy.availability(precision, CUDA)
        assert found.status == "unavailable"
        assert "(NVML: libnvidia-ml.so.1, nvml.dll) is not here" in found.reason
        assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in found.reason
        assert "torch.cuda.init()" in found.reason
    assert policy.device_count() == 0
    assert not sim.tripped


def test_without_the_nvml_library_get_precision_raises_the_reason(machine: Callable[..., Simulation]) -> None:
    machine([H100], nvml=False)
    with pytest.raises(mixprec.BackendUnavailableError, match=r"management library \(NVML"):
        mixprec.get_precision("bf16-mixed", "cuda")


def test_without_the_nvml_library_nothing_mixprec_lists_for_cuda_starts_cuda(
    machine: Callable[..., Simulation],
) -> None:
    sim = machine([H100], nvml=False)
    with contextlib.suppress(CUDAStarted):
        mixprec.available("cuda")
    assert sim.tripped == []


def test_without_nvidia_ml_py_the_reason_says_to_install_it(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine([H100])
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what an environment without it imports
    assert "pip install 'mixprec[cuda]'" in policy.availability("16-mixed", CUDA).reason


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "the NVIDIA driver is not loaded"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "reboot, or reload the nvidia kernel module"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "check the permissions of /dev/nvidia*"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML failed to start (Unknown Error): check that nvidia-smi works"),
    ],
)
def test_nvml_failing_to_start_is_unavailable_naming_the_cause(
    machine: Callable[..., Simulation], error: int, says: str
) -> None:
    machine([H100], init_error=error)
    assert says in policy.availability("bf16-mixed", CUDA).reason
    assert policy.device_count() == 0


def test_a_gpu_nvml_cannot_read_makes_the_gpus_unavailable(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine([H100])

    def lost(handle: object) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCudaComputeCapability", lost)
    assert (
        policy.availability("bf16-mixed", CUDA).reason
        == "NVML could not read the GPUs (GPU is lost): check that nvidia-smi works"
    )


def test_once_cuda_is_initialised_torch_is_asked(
    machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)  # NVML would say nothing
    properties = [
        SimpleNamespace(name="NVIDIA A100-SXM4-80GB", major=8, minor=0),
        SimpleNamespace(name="Tesla T4", major=7, minor=5),
    ]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties.__getitem__)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    found = policy.probe()
    assert found.devices == (GPU("NVIDIA A100-SXM4-80GB", (8, 0)), GPU("Tesla T4", (7, 5)))
    assert found.current_device == 1
    assert policy.availability("bf16-mixed", CUDA).reason.startswith("CUDA device 1 is sm_75")


@pytest.fixture
def rocm(machine: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch) -> Simulation:
    """A ROCm build of torch: torch.version.hip set, torch.version.cuda None."""
    sim = machine([])
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", "6.2")
    return sim


def test_on_rocm_without_amdsmi_the_gpus_are_unavailable_saying_to_install_it(
    rocm: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    found = policy.availability("bf16-mixed", CUDA)
    assert found.status == "unavailable"
    assert "pip install /opt/rocm/share/amd_smi" in found.reason
    assert not rocm.tripped


def test_on_rocm_torch_counts_the_gpus_and_each_takes_every_precision(
    rocm: Simulation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", ModuleType("amdsmi"))  # torch imports it where it is installed
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # torch counts through amdsmi
    assert policy.probe().devices == (GPU(None, None),) * 2
    found = policy.availability("bf16-mixed", Device("cuda", 1))
    assert found.reason == "CUDA device 1 is a ROCm GPU: torch takes every ROCm GPU to compute bfloat16 natively"


def test_gpu_gives_the_device_or_raises_the_reason_it_cannot() -> None:
    found = gpus(AMPERE, TURING, current=1)
    assert found.gpu().capability == TURING
    assert found.gpu(0).capability == AMPERE
    with pytest.raises(mixprec.BackendUnavailableError, match=r"cuda:2 does not exist"):
        found.gpu(2)


# --- nothing mixprec does on a simulated CUDA machine starts CUDA ------------------------------

#: Every precision get_precision serves on "cuda": mixprec-cuda's and the core's.
SERVED = (*policy.OFFERED, "32-true", "64-true")


@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize("precision", SERVED)
def test_get_precision_on_a_simulated_gpu_builds_without_starting_cuda(
    machine: Callable[..., Simulation], precision: str, target: str
) -> None:
    sim = machine([H100])
    built = mixprec.get_precision(precision, "cuda", target=target)
    assert built.precision == precision
    assert (sim.tripped, torch.cuda.is_initialized()) == ([], False)


def test_a_cuda_grad_scaler_built_on_a_simulated_gpu_is_enabled_without_starting_cuda(
    machine: Callable[..., Simulation],
) -> None:
    sim = machine([H100])
    assert mixprec.get_precision("16-mixed", "cuda").scaler.is_enabled()  # type: ignore[attr-defined]
    assert (sim.tripped, torch.cuda.is_initialized()) == ([], False)


@pytest.mark.parametrize("target", ["fabric", "trainer"])
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true", "16-true", "32-true"])
def test_fsdp_precisions_on_a_simulated_gpu_build_without_starting_cuda(
    machine: Callable[..., Simulation], precision: str, target: str
) -> None:
    sim = machine([H100])
    mixprec.get_precision(precision, "cuda", target=target, strategy="fsdp")
    assert (sim.tripped, torch.cuda.is_initialized()) == ([], False)


def test_available_on_a_simulated_gpu_reads_it_without_starting_cuda(machine: Callable[..., Simulation]) -> None:
    sim = machine([H100, H100])
    records = {r.precision: r for r in mixprec.available("cuda") if r.backend == "cuda"}
    assert {p: r.status for p, r in records.items()} == dict.fromkeys(policy.OFFERED, "available")
    assert H100.name in records["bf16-mixed"].reason
    assert (sim.tripped, torch.cuda.is_initialized()) == ([], False)


def test_explain_on_a_simulated_gpu_chooses_bf16_mixed_without_starting_cuda(
    machine: Callable[..., Simulation],
) -> None:
    sim = machine([H100])
    assert "chosen: 'bf16-mixed' from backend 'cuda'" in str(mixprec.explain("auto", "cuda:0"))
    assert (sim.tripped, torch.cuda.is_initialized()) == ([], False)


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["explain", "auto", "--device", "cuda"]])
def test_the_cli_on_a_simulated_gpu_answers_without_starting_cuda(
    machine: Callable[..., Simulation], argv: list[str]
) -> None:
    sim = machine([T4])
    ran = run_cli(argv)
    assert ran.code == 0, ran.err
    assert "Tesla T4" in ran.out
    assert (sim.tripped, torch.cuda.is_initialized()) == ([], False)


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
    assert isinstance(created, HalfPrecision)
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
