from __future__ import annotations

import importlib
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def fake_device() -> ModuleType:
    """The fake PrivateUse1 device ``fakedev``, built and registered once per process; a skip where it cannot be."""
    from tests.accelerator.toolchain import unbuildable

    reason = unbuildable()
    if reason is not None:
        pytest.skip(reason)
    return importlib.import_module("tests.accelerator.fake_device")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests on the fake device last: renaming PrivateUse1 changes the process for good (it cannot be undone),
    and with a device present, "the best device present" is no longer the CPU for the tests that run after."""
    items.sort(key=lambda item: "fake_device" in getattr(item, "fixturenames", ()))
