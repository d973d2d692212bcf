"""``mixprec.probes``: the hardware facts every backend decides with, read without starting a device runtime.

The probes run for real on this machine and are compared with what torch and the kernel say; the
result types are plain data that policies are tested with (tests/backends/).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mixprec import probes
from mixprec.probes import CPUFeatures, CUDAProbe, MPSProbe
from mixprec.probes._cpu import CPUINFO, cpuinfo_flags

FEATURES = st.builds(CPUFeatures, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@pytest.mark.slow
def test_importing_the_probes_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, mixprec.probes; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pynvml')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


# --- the CPU --------------------------------------------------------------------------------------


def test_the_cpu_probe_reports_torchs_cpu_flags() -> None:
    found = probes.cpu()
    assert found.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()
    assert found.amx_tile == torch.cpu._is_amx_tile_supported()
    assert found.amx_fp16 == torch.cpu._is_amx_fp16_supported()
    assert found.avx512_fp16 <= torch.cpu._is_avx512_supported()


@pytest.mark.skipif(not CPUINFO.is_file(), reason="no /proc/cpuinfo on this system")
def test_a_flag_this_torch_has_no_probe_for_is_read_from_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    # An older torch lacks some of its private probes; the kernel's flags answer for them.
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    probes.cpu.cache_clear()
    try:
        found = probes.cpu()
    finally:
        monkeypatch.undo()
        probes.cpu.cache_clear()
    assert found.amx_tile == ("amx_tile" in cpuinfo_flags(CPUINFO.read_text()))


def test_the_cpu_flags_are_those_of_the_flags_line() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\nbugs\t: spectre\n"
    assert cpuinfo_flags(text) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}


def test_a_cpuinfo_without_flags_has_none() -> None:
    assert cpuinfo_flags("processor : 0\nFeatures : fp asimd\n") == frozenset()


@given(FEATURES)
def test_native_names_the_features_that_compute_each_dtype(features: CPUFeatures) -> None:
    assert features.native("bfloat16") == features.native_bf16
    assert features.native("float16") == features.native_fp16
    assert bool(features.native("bfloat16")) == (features.avx512_bf16 or features.amx_tile)


def test_native_of_a_dtype_the_cpu_probe_does_not_judge_is_an_error() -> None:
    with pytest.raises(ValueError, match="not 'float8_e4m3fn'"):
        CPUFeatures(True, True, True, True).native("float8_e4m3fn")


def test_probe_results_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        probes.cpu().amx_tile = True  # type: ignore[misc]


# --- CUDA, MPS, any device type ---------------------------------------------------------------------


@pytest.mark.skipif(torch.version.cuda is not None, reason="torch here is built with CUDA")
def test_on_a_cpu_build_of_torch_the_cuda_probe_says_so_and_what_to_install() -> None:
    found = probes.cuda()
    assert found == CUDAProbe(torch.__version__, None, torch.version.hip)
    reason = found.unavailable_reason()
    assert reason is not None
    assert "was built without CUDA: install a CUDA build of torch" in reason


def test_reading_the_cuda_gpus_initialises_no_cuda() -> None:
    probes.cuda()
    assert not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="this system cannot fork")
def test_after_probing_a_process_can_fork_and_its_child_probes_the_same() -> None:
    parent = (probes.cpu(), probes.cuda(), probes.mps(), probes.device_count("cuda"))
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only, whatever happens
        code = 1
        try:
            probes.cpu.cache_clear()
            child = (probes.cpu(), probes.cuda(), probes.mps(), probes.device_count("cuda"))
            code = 0 if child == parent and not torch.cuda.is_initialized() else 2  # type: ignore[no-untyped-call]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_mps_probe_records_torch_macos_and_mps() -> None:
    found = probes.mps()
    assert isinstance(found, MPSProbe)
    assert found.torch_version == probes.release(torch.__version__)
    assert found.macos_version == probes.release(platform.mac_ver()[0])
    assert (found.built, found.available) == (torch.backends.mps.is_built(), torch.backends.mps.is_available())


@pytest.mark.parametrize(("text", "version"), [("2.8.0+cpu", (2, 8)), ("14", (14, 0)), ("", None), ("x1", None)])
def test_release_is_the_major_and_minor_a_version_starts_with(text: str, version: tuple[int, int] | None) -> None:
    assert probes.release(text) == version


def test_torch_counts_one_cpu() -> None:
    assert probes.device_count("cpu") == 1


def test_a_device_type_torch_has_no_module_for_is_not_counted_saying_why() -> None:
    found = probes.device_count("nosuchdevice")
    assert isinstance(found, str)
    assert "has no device module torch.nosuchdevice" in found


def test_the_probes_are_the_ones_the_backends_use() -> None:
    from mixprec_cpu import policy as cpu_policy
    from mixprec_mps import policy as mps_policy

    assert cpu_policy.probe() is probes.cpu()
    assert mps_policy.probe() is probes.mps()


def test_no_backend_imports_another_backend() -> None:
    root = Path(__file__).resolve().parents[2] / "backends"
    for package in sorted(root.glob("*/mixprec_*")):
        others = {f"mixprec_{p.name}" for p in root.iterdir() if p.is_dir() and p.name != package.parent.name}
        for module in package.glob("*.py"):
            text = module.read_text(encoding="utf-8")
            assert not [o for o in others if f"import {o}" in text or f"from {o}" in text], module
