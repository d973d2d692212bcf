"""mixprec-accelerator as an installed distribution: entry point, requirements, type information, registry row."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import mixprec
import mixprec_accelerator
from mixprec import ANY_DEVICE, ENTRY_POINT_GROUP


def test_the_distribution_registers_one_entry_point_named_after_the_backend() -> None:
    entry_points = [
        ep for ep in metadata.distribution("mixprec-accelerator").entry_points if ep.group == ENTRY_POINT_GROUP
    ]
    assert [(ep.name, ep.value) for ep in entry_points] == [("accelerator", "mixprec_accelerator")]


def test_the_distribution_depends_on_mixprec_and_torch_only() -> None:
    assert set(metadata.requires("mixprec-accelerator") or ()) == {"mixprec>=0.1.0", "torch>=2.4"}


def test_the_distribution_ships_its_type_information() -> None:
    assert (Path(mixprec_accelerator.__file__).parent / "py.typed").is_file()


def test_the_backend_serves_every_device_type_below_every_default_priority() -> None:
    (backend,) = mixprec_accelerator.mixprec_backends()
    assert (backend.name, backend.device_type) == ("accelerator", ANY_DEVICE)
    assert -1000 < backend.priority < 0
    assert {r.distribution for r in mixprec.available() if r.backend == "accelerator"} == {"mixprec-accelerator"}
