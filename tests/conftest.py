from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixprec._registry import registry
from tests.distributions import Site, site_on_path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh site directory on sys.path for throwaway distributions; the registry rediscovers."""
    yield from site_on_path(tmp_path / "site")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """mixprec.tune's cache in a directory of the test session's own, never the user's (~/.cache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees the installed plugins freshly discovered, with no MIXPREC_* variable set."""
    import os

    for name in [n for n in os.environ if n.startswith("MIXPREC_")]:
        monkeypatch.delenv(name)
    registry.reset()
    yield
    registry.reset()
