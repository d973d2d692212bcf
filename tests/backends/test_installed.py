"""The three backends as installed distributions: metadata, entry points, cheap plugin modules.

These read what pip installed (``importlib.metadata``) and what the registry discovered from it;
nothing is faked.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import mixprec
from mixprec import ENTRY_POINT_GROUP, Backend
from mixprec.testing import CAPABILITIES

DISTRIBUTIONS = {"cpu": "mixprec-cpu", "cuda": "mixprec-cuda", "mps": "mixprec-mps"}
OFFERED = {
    "cpu": ["16-mixed", "16-true", "bf16-mixed", "bf16-true"],
    "cuda": ["16-mixed", "16-true", "bf16-mixed", "bf16-true"],
    "mps": ["16-mixed", "16-true", "bf16-mixed", "bf16-true"],
}
per_backend = pytest.mark.parametrize(("name", "distribution"), DISTRIBUTIONS.items())


@per_backend
def test_the_distribution_registers_one_entry_point_named_after_the_backend(name: str, distribution: str) -> None:
    entry_points = [ep for ep in metadata.distribution(distribution).entry_points if ep.group == ENTRY_POINT_GROUP]
    assert [(ep.name, ep.value) for ep in entry_points] == [(name, f"mixprec_{name}")]


#: The core each backend needs: mixprec-cuda the core's extra that reads the GPUs through NVML.
CORE = {"cpu": "mixprec>=0.1.0", "cuda": "mixprec[cuda]>=0.1.0", "mps": "mixprec>=0.1.0"}


@per_backend
def test_the_distribution_depends_on_the_core_and_torch_only(name: str, distribution: str) -> None:
    assert set(metadata.requires(distribution) or ()) == {CORE[name], "torch>=2.4"}


@per_backend
def test_the_distribution_ships_its_type_information(name: str, distribution: str) -> None:
    package = importlib.import_module(f"mixprec_{name}")
    assert package.__file__ is not None
    assert (Path(package.__file__).parent / "py.typed").is_file()


@per_backend
def test_the_registry_lists_the_backend_from_its_distribution(name: str, distribution: str) -> None:
    records = [r for r in mixprec.available() if r.backend == name]
    assert sorted(r.precision for r in records) == OFFERED[name]
    for record in records:
        assert (record.device_type, record.distribution, record.version) == (
            name,
            distribution,
            metadata.version(distribution),
        )
        assert record.status != "failed", record.reason


@per_backend
def test_the_backend_declares_only_capabilities_the_conformance_suite_knows(name: str, distribution: str) -> None:
    (entry_point,) = metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
    backends: list[Backend] = entry_point.load().mixprec_backends()
    assert [b.name for b in backends] == [name]
    assert set(backends[0].unsupported) <= set(CAPABILITIES)


@pytest.mark.slow
def test_loading_the_entry_points_imports_neither_torch_nor_lightning() -> None:
    # In a fresh interpreter: load the entry points as the registry does; then ask a policy for its
    # device count, which imports torch (so the check is seen to detect it).
    heavy = "('torch', 'lightning', 'lightning_fabric')"
    code = (
        "import importlib, sys\nfrom importlib.metadata import entry_points\n"
        f"names = {tuple(DISTRIBUTIONS)!r}\n"
        f"plugins = [ep.load() for ep in entry_points(group={ENTRY_POINT_GROUP!r}) if ep.name in names]\n"
        f"print(len(plugins), sorted(m for m in {heavy} if m in sys.modules))\n"
        "importlib.import_module(plugins[0].mixprec_backends()[0].policy).device_count()\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["3 []", "['torch']"]
