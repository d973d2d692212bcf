"""Real installed distributions for registry tests, written to a temporary site directory.

A distribution here is what pip would leave behind: a ``NAME-VERSION.dist-info`` folder with
``METADATA`` and ``entry_points.txt``, beside the package's modules, in a directory on ``sys.path``.
``importlib.metadata`` finds it exactly as it finds an installed wheel, so the registry's real
entry-point scan runs against it; nothing is patched.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

from mixprec._registry import registry


class Site:
    """A directory on ``sys.path`` to install throwaway distributions into."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: set[str] = set()

    def install(
        self,
        name: str,
        *,
        version: str = "1.0",
        entry_points: Mapping[str, str] | None = None,
        modules: Mapping[str, str] | None = None,
        group: str = "mixprec.backends",
    ) -> None:
        """Install distribution ``name`` with ``entry_points`` (name -> "module[:attr]") and ``modules``.

        ``modules`` maps dotted module names to their source (dedented). A package ``a`` with a
        submodule ``a.b`` is written as ``a/__init__.py`` and ``a/b.py``.
        """
        dist_info = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = [f"[{group}]"] + [f"{ep} = {value}" for ep, value in (entry_points or {}).items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        packages = {m.rsplit(".", 1)[0] for m in (modules or {}) if "." in m}
        for module, source in (modules or {}).items():
            parts = module.split(".")
            if module in packages:
                path = self.root.joinpath(*parts, "__init__.py")
            else:
                path = self.root.joinpath(*parts[:-1], parts[-1] + ".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
            self.modules.add(parts[0])
        importlib.invalidate_caches()
        registry.reset()

    def imported(self, module: str) -> bool:
        return module in sys.modules


def site_on_path(root: Path) -> Iterator[Site]:
    site = Site(root)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    registry.reset()
    try:
        yield site
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".")[0] in site.modules:
                del sys.modules[name]
        importlib.invalidate_caches()
        registry.reset()
