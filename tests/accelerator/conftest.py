from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

# torch.utils.cpp_extension imports setuptools, whose override of distutils failed ("AssertionError:
# .../distutils/core.py") when it was first imported late in a run of the whole suite, after other tests had
# imported and unloaded modules. Imported here, at collection, it meets a clean import system.
import torch.utils.cpp_extension  # noqa: F401


@pytest.fixture(scope="session")
def fake_device() -> ModuleType:
    """The fake PrivateUse1 device ``fakedev``, built and registered once per process; a skip where it cannot be."""
    from tests.accelerator.toolchain import unbuildable

    reason = unbuildable()
    if reason is not None:
        pytest.skip(reason)
    return importlib.import_module("tests.accelerator.fake_device")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests on the fake device in a process of their own (``pytest tests/accelerator``, ``tox -e
    accelerator``), and last: torch's autograd engine sizes its device queues at the first backward of the process,
    so a device registered after another test ran backward fails every backward on it (an INTERNAL ASSERT in
    engine.cpp); and renaming PrivateUse1 changes the process for good (with a device present, "the best device
    present" is no longer the CPU for the tests that run after)."""
    here = Path(__file__).parent
    on_device = [item for item in items if "fake_device" in getattr(item, "fixturenames", ())]
    if any(here not in Path(str(item.path)).parents for item in items):
        skip = pytest.mark.skip(
            reason="the fake device needs a process of its own (autograd sizes its device queues at the first"
            " backward): run pytest tests/accelerator, as tox -e accelerator does"
        )
        for item in on_device:
            item.add_marker(skip)
    items.sort(key=lambda item: item in on_device)
